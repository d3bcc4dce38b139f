package ringmq;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Kafka Java client (Admin, Producer, Consumer) against one broker: each check prints
 * "PASS name" or "FAIL name: reason"; the exit code is the number of failures. Run by
 * tests/test_java_clients.py against a real ringmqd.
 *
 *   java -cp ... ringmq.ClientSuite BOOTSTRAP [CHECK...]
 */
public final class ClientSuite {
    interface Check {
        void run() throws Exception;
    }

    private final String bootstrap;
    private final String run = Long.toString(System.nanoTime(), 36);
    private int failures;

    private ClientSuite(String bootstrap) {
        this.bootstrap = bootstrap;
    }

    public static void main(String[] args) throws Exception {
        ClientSuite s = new ClientSuite(args[0]);
        Set<String> only = new HashSet<>(List.of(args).subList(1, args.length));
        Map<String, Check> checks = new java.util.LinkedHashMap<>();
        checks.put("admin-topics", s::adminTopics);
        checks.put("admin-configs", s::adminConfigs);
        checks.put("admin-cluster", s::adminCluster);
        checks.put("admin-offsets-and-delete-records", s::adminOffsetsAndDeleteRecords);
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            checks.put("idempotent-producer-" + codec, () -> s.producer(codec));
        }
        checks.put("consumer-group-cooperative-sticky", s::consumerGroup);
        checks.put("consumer-seek-and-commit-async", s::consumerSeek);
        checks.put("consumer-static-membership", s::staticMembership);
        checks.put("admin-consumer-groups", s::adminConsumerGroups);
        for (Map.Entry<String, Check> e : checks.entrySet()) {
            if (!only.isEmpty() && !only.contains(e.getKey())) {
                continue;
            }
            long t0 = System.nanoTime();
            try {
                e.getValue().run();
                System.out.printf("PASS %s (%d ms)%n", e.getKey(), (System.nanoTime() - t0) / 1_000_000);
            } catch (Throwable t) {
                s.failures++;
                System.out.printf("FAIL %s: %s%n", e.getKey(), t);
                t.printStackTrace(System.out);
            }
            System.out.flush();
        }
        System.exit(s.failures);
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    private Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        return Admin.create(p);
    }

    private KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    private KafkaConsumer<String, String> consumer(String group, Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    private String topic(Admin admin, String name, int partitions, Map<String, String> configs) throws Exception {
        String t = name + "-" + run;
        try {
            admin.createTopics(List.of(new NewTopic(t, partitions, (short) 1).configs(configs))).all().get();
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw e;
            }
        }
        return t;
    }

    private List<RecordMetadata> produce(String topic, int n, Map<String, Object> extra) throws Exception {
        List<java.util.concurrent.Future<RecordMetadata>> futures = new ArrayList<>();
        try (KafkaProducer<String, String> p = producer(extra)) {
            for (int i = 0; i < n; i++) {
                futures.add(p.send(new ProducerRecord<>(topic, "key-" + (i % 17), "value-" + i)));
            }
            p.flush();
        }
        List<RecordMetadata> acks = new ArrayList<>();
        for (java.util.concurrent.Future<RecordMetadata> f : futures) {
            acks.add(f.get(30, TimeUnit.SECONDS));
        }
        return acks;
    }

    private List<ConsumerRecord<String, String>> drain(KafkaConsumer<String, String> c, int expected) {
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 60_000;
        while (got.size() < expected && System.currentTimeMillis() < deadline) {
            ConsumerRecords<String, String> rs = c.poll(Duration.ofMillis(200));
            rs.forEach(got::add);
        }
        return got;
    }

    // ---- Admin ----

    private void adminTopics() throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-admin", 3, Map.of("retention.ms", "3600000"));
            check(a.listTopics().names().get().contains(t), "listTopics has " + t);
            TopicDescription d = a.describeTopics(List.of(t)).allTopicNames().get().get(t);
            check(d.partitions().size() == 3, "3 partitions: " + d);
            check(d.partitions().get(0).leader() != null, "a leader");
            check(d.topicId() != null, "a topic id");
            try {
                a.createTopics(List.of(new NewTopic(t, 1, (short) 1))).all().get();
                check(false, "creating it twice fails");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException, "TopicExistsException: " + e.getCause());
            }
            a.createPartitions(Map.of(t, org.apache.kafka.clients.admin.NewPartitions.increaseTo(5))).all().get();
            check(a.describeTopics(List.of(t)).allTopicNames().get().get(t).partitions().size() == 5, "5 partitions");
            a.deleteTopics(List.of(t)).all().get();
            long deadline = System.currentTimeMillis() + 10_000;
            while (a.listTopics().names().get().contains(t) && System.currentTimeMillis() < deadline) {
                Thread.sleep(100);
            }
            check(!a.listTopics().names().get().contains(t), "deleted");
        }
    }

    private void adminConfigs() throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-configs", 1, Map.of());
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, t);
            a.incrementalAlterConfigs(Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.SET))))
                .all().get();
            Config c = a.describeConfigs(List.of(r)).all().get().get(r);
            check("7200000".equals(c.get("retention.ms").value()), "retention.ms: " + c.get("retention.ms"));
            check(c.get("retention.ms").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "dynamic source");
            check("compact".equals(c.get("cleanup.policy").value()), "compact");
            a.incrementalAlterConfigs(Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all().get();
            c = a.describeConfigs(List.of(r)).all().get().get(r);
            check(c.get("retention.ms").source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "back to default");
            ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER,
                    Integer.toString(a.describeCluster().controller().get().id()));
            Config bc = a.describeConfigs(List.of(broker)).all().get().get(broker);
            check(bc.get("advertised.listeners") != null, "broker config advertised.listeners: " + bc.entries().size());
        }
    }

    private void adminCluster() throws Exception {
        try (Admin a = admin()) {
            DescribeClusterResult c = a.describeCluster(
                    new org.apache.kafka.clients.admin.DescribeClusterOptions().includeAuthorizedOperations(true));
            check(!c.nodes().get().isEmpty(), "nodes");
            check(c.clusterId().get() != null, "cluster id");
            check(c.controller().get() != null, "controller");
            check(c.authorizedOperations().get() != null && !c.authorizedOperations().get().isEmpty(),
                    "authorized operations");
        }
    }

    private void adminOffsetsAndDeleteRecords() throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-offsets", 1, Map.of());
            produce(t, 100, Map.of());
            TopicPartition tp = new TopicPartition(t, 0);
            ListOffsetsResult r = a.listOffsets(Map.of(tp, OffsetSpec.latest()));
            check(r.partitionResult(tp).get().offset() == 100, "latest 100");
            check(a.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get().offset() == 0, "earliest 0");
            check(a.listOffsets(Map.of(tp, OffsetSpec.maxTimestamp())).partitionResult(tp).get().offset() >= 0, "max ts");
            a.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(40))).all().get();
            check(a.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get().offset() == 40, "earliest 40");
        }
    }

    // ---- Producer ----

    private void producer(String codec) throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-codec-" + codec, 2, Map.of());
            Map<String, Object> cfg = new HashMap<>();
            cfg.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            cfg.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
            cfg.put(ProducerConfig.ACKS_CONFIG, "all");
            List<RecordMetadata> acks = produce(t, 2000, cfg);
            check(acks.size() == 2000, "acks");
            try (KafkaConsumer<String, String> c = consumer(null, Map.of())) {
                List<TopicPartition> tps = List.of(new TopicPartition(t, 0), new TopicPartition(t, 1));
                c.assign(tps);
                c.seekToBeginning(tps);
                List<ConsumerRecord<String, String>> got = drain(c, 2000);
                check(got.size() == 2000, "consumed " + got.size());
                Set<String> values = new HashSet<>();
                got.forEach(rec -> values.add(rec.value()));
                check(values.size() == 2000, "no duplicates, none lost: " + values.size());
            }
        }
    }

    // ---- Consumer ----

    private void consumerGroup() throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-group", 4, Map.of());
            produce(t, 1000, Map.of());
            String g = "java-coop-" + run;
            Map<String, Object> cfg = Map.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                    "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
            try (KafkaConsumer<String, String> c1 = consumer(g, cfg); KafkaConsumer<String, String> c2 = consumer(g, cfg)) {
                c1.subscribe(List.of(t));
                c2.subscribe(List.of(t));
                List<ConsumerRecord<String, String>> got = new ArrayList<>();
                long deadline = System.currentTimeMillis() + 60_000;
                while (got.size() < 1000 && System.currentTimeMillis() < deadline) {
                    c1.poll(Duration.ofMillis(100)).forEach(got::add);
                    c2.poll(Duration.ofMillis(100)).forEach(got::add);
                }
                check(got.size() == 1000, "consumed " + got.size());
                // Both members end up with partitions (cooperative rebalance completed).
                deadline = System.currentTimeMillis() + 30_000;
                while ((c1.assignment().isEmpty() || c2.assignment().isEmpty()) && System.currentTimeMillis() < deadline) {
                    c1.poll(Duration.ofMillis(100));
                    c2.poll(Duration.ofMillis(100));
                }
                check(c1.assignment().size() + c2.assignment().size() == 4 && !c1.assignment().isEmpty()
                        && !c2.assignment().isEmpty(), "split " + c1.assignment() + " / " + c2.assignment());
                c1.commitSync();
                c2.commitSync();
            }
            Map<TopicPartition, OffsetAndMetadata> committed =
                    a.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata().get();
            long total = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            check(total == 1000, "committed " + committed);
        }
    }

    private void consumerSeek() throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-seek", 1, Map.of());
            produce(t, 200, Map.of());
            String g = "java-seek-" + run;
            TopicPartition tp = new TopicPartition(t, 0);
            try (KafkaConsumer<String, String> c = consumer(g, Map.of())) {
                c.subscribe(List.of(t));
                List<ConsumerRecord<String, String>> got = drain(c, 200);
                check(got.size() == 200, "first pass " + got.size());
                c.seek(tp, 150);
                got = drain(c, 50);
                check(got.size() == 50 && got.get(0).offset() == 150, "after seek " + got.size());
                final boolean[] done = {false};
                final Exception[] error = {null};
                c.commitAsync(Map.of(tp, new OffsetAndMetadata(180, "meta")), (offsets, e) -> {
                    done[0] = true;
                    error[0] = e;
                });
                long deadline = System.currentTimeMillis() + 10_000;
                while (!done[0] && System.currentTimeMillis() < deadline) {
                    c.poll(Duration.ofMillis(50));
                }
                check(done[0] && error[0] == null, "commitAsync: " + error[0]);
                OffsetAndMetadata om = c.committed(Set.of(tp)).get(tp);
                check(om.offset() == 180 && "meta".equals(om.metadata()), "committed " + om);
                c.seekToBeginning(List.of(tp));
                check(c.position(tp) == 0, "position 0");
                Map<TopicPartition, org.apache.kafka.clients.consumer.OffsetAndTimestamp> byTime =
                        c.offsetsForTimes(Map.of(tp, 0L));
                check(byTime.get(tp).offset() == 0, "offsetsForTimes");
            }
        }
    }

    private void staticMembership() throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-static", 2, Map.of());
            produce(t, 100, Map.of());
            String g = "java-static-" + run;
            Map<String, Object> cfg = Map.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-1",
                    ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30000);
            try (KafkaConsumer<String, String> c = consumer(g, cfg)) {
                c.subscribe(List.of(t));
                check(drain(c, 100).size() == 100, "consumed");
                c.commitSync();
            }
            ConsumerGroupDescription d = a.describeConsumerGroups(List.of(g)).all().get().get(g);
            // A static member stays in the group after close (until its session times out).
            check(d.members().size() == 1 && d.members().iterator().next().groupInstanceId().orElse("").equals("instance-1"),
                    "static member kept: " + d);
            try (KafkaConsumer<String, String> c = consumer(g, cfg)) {
                c.subscribe(List.of(t));
                long deadline = System.currentTimeMillis() + 30_000;
                while (c.assignment().size() < 2 && System.currentTimeMillis() < deadline) {
                    c.poll(Duration.ofMillis(100));
                }
                check(c.assignment().size() == 2, "rejoined with its partitions " + c.assignment());
            }
        }
    }

    private void adminConsumerGroups() throws Exception {
        try (Admin a = admin()) {
            String t = topic(a, "java-groups", 2, Map.of());
            produce(t, 50, Map.of());
            String g = "java-admin-group-" + run;
            try (KafkaConsumer<String, String> c = consumer(g, Map.of())) {
                c.subscribe(List.of(t));
                check(drain(c, 50).size() == 50, "consumed");
                c.commitSync();
                Collection<GroupListing> groups = a.listGroups().all().get();
                check(groups.stream().anyMatch(l -> l.groupId().equals(g)), "listGroups has " + g + ": " + groups);
                ConsumerGroupDescription d = a.describeConsumerGroups(List.of(g)).all().get().get(g);
                check(d.members().size() == 1, "one member " + d);
                check(d.groupState().toString().equalsIgnoreCase("stable"), "stable " + d.groupState());
            }
            Map<TopicPartition, OffsetAndMetadata> reset = new HashMap<>();
            reset.put(new TopicPartition(t, 0), new OffsetAndMetadata(0));
            a.alterConsumerGroupOffsets(g, reset).all().get();
            Map<TopicPartition, OffsetAndMetadata> now = a.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata().get();
            check(now.get(new TopicPartition(t, 0)).offset() == 0, "altered " + now);
            a.deleteConsumerGroupOffsets(g, Set.of(new TopicPartition(t, 1))).all().get();
            now = a.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata().get();
            check(!now.containsKey(new TopicPartition(t, 1)), "offset deleted " + now);
            a.deleteConsumerGroups(List.of(g)).all().get();
            KafkaFuture<Collection<GroupListing>> after = a.listGroups().all();
            check(after.get().stream().noneMatch(l -> l.groupId().equals(g)), "deleted");
        }
    }

    @SuppressWarnings("unused")
    private static <T> List<T> list(Collection<T> c) {
        return Collections.unmodifiableList(new ArrayList<>(c));
    }
}
