-- The login the workers use. It gets its rights from callstream_writer, which `callstream db upgrade`
-- creates and grants to it (the `migrate` service in docker-compose.yml): no DDL rights of its own.
CREATE ROLE callstream_worker LOGIN PASSWORD 'callstream-worker';
