// One chunk published with kafkajs 2, configured as a Node recorder would: acks=all, the default
// (Java-compatible murmur2) partitioner; mode none, gzip or idempotent.
// argv: brokers topic key payloadFile mode headersJson
const fs = require("fs");
const { Kafka, CompressionTypes, Partitioners, logLevel } = require("kafkajs");

async function main() {
  const [brokers, topic, key, file, mode, headersJson] = process.argv.slice(2);
  const kafka = new Kafka({ brokers: [brokers], clientId: "recorder", logLevel: logLevel.ERROR });
  const idempotent = mode === "idempotent";
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, idempotent,
                                    maxInFlightRequests: idempotent ? 1 : undefined });
  await producer.connect();
  await producer.send({
    topic, acks: -1, compression: mode === "gzip" ? CompressionTypes.GZIP : CompressionTypes.None,
    messages: [{ key, value: fs.readFileSync(file), headers: JSON.parse(headersJson) }],
  });
  await producer.disconnect();
}

main().catch((err) => { console.error(err); process.exit(1); });
