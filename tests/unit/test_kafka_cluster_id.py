"""The lab's Apache Kafka: a cluster id StorageTool always accepts."""

import base64

from callstream_lab.stack.apache_kafka import _cluster_id


def test_a_cluster_id_never_starts_with_a_dash_and_is_sixteen_bytes():
    # One id in 64 would start with "-" and StorageTool would read `-t -hZm...` as an option.
    ids = [_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids) and len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
