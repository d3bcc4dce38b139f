// kafkajs against one broker: admin (create/describe/offsets), an idempotent producer,
// a group consumer that commits, then the committed offsets through the admin API.
// Prints "PASS kafkajs" or "FAIL kafkajs: reason"; exit code 0 on success.
const { Kafka, logLevel } = require('kafkajs');

const N = 500;

async function main(bootstrap) {
  const run = Date.now().toString(36);
  const topic = `kafkajs-${run}`;
  const groupId = `kafkajs-group-${run}`;
  const kafka = new Kafka({ clientId: 'ringmq-tests', brokers: [bootstrap], logLevel: logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true });
  if (!created) throw new Error('createTopics returned false');
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  if (meta.topics[0].partitions.length !== 3) throw new Error(`partitions: ${JSON.stringify(meta)}`);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < N; i++) messages.push({ key: `k${i % 7}`, value: `value-${String(i).padStart(4, '0')}` });
  for (let i = 0; i < N; i += 100) {
    await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 100) });
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${got.size} of ${N}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        got.add(message.value.toString());
        if (got.size === N) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.commitOffsets([]).catch(() => {});
  await consumer.disconnect();
  if (got.size !== N) throw new Error(`consumed ${got.size}`);

  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  const committed = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  if (committed !== N) throw new Error(`committed ${committed}: ${JSON.stringify(offsets)}`);
  const latest = await admin.fetchTopicOffsets(topic);
  if (latest.reduce((s, p) => s + Number(p.high), 0) !== N) throw new Error(`high watermarks ${JSON.stringify(latest)}`);
  const groups = await admin.listGroups();
  if (!groups.groups.some((g) => g.groupId === groupId)) throw new Error('listGroups');
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
}

main(process.argv[2]).then(
  () => { console.log('PASS kafkajs'); process.exit(0); },
  (e) => { console.log(`FAIL kafkajs: ${e && e.stack || e}`); process.exit(1); },
);
