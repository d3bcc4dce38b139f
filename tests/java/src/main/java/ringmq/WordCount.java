package ringmq;

import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * Kafka Streams word count against one broker: lines in, a repartition by word
 * (repartition topic), a count in a state store (changelog topic, compacted), counts
 * out. At least once by default; with "exactly_once_v2" every task commits in a
 * transaction and the counts are read back read_committed. Checks the final count of
 * every word against the input and that the internal topics exist. Exit 0 and
 * "PASS streams-word-count" on success.
 *
 * With a replication factor (a cluster), every topic, internal ones included, gets it.
 *
 *   java -cp ... ringmq.WordCount BOOTSTRAP STATE_DIR [at_least_once|exactly_once_v2] [RF]
 */
public final class WordCount {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        short rf = args.length > 3 ? Short.parseShort(args[3]) : 1;
        String run = Long.toString(System.nanoTime(), 36);
        String app = "wordcount-" + run;
        String in = "wc-in-" + run;
        String out = "wc-out-" + run;
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            admin.createTopics(List.of(new NewTopic(in, 2, rf), new NewTopic(out, 2, rf))).all().get();
        }
        String[] lines = new String[300];
        Map<String, Long> expected = new HashMap<>();
        String[] vocabulary = {"kafka", "ringmq", "stream", "table", "state", "store", "log", "offset"};
        for (int i = 0; i < lines.length; i++) {
            StringBuilder sb = new StringBuilder();
            for (int w = 0; w <= i % 5; w++) {
                String word = vocabulary[(i * 7 + w * 3) % vocabulary.length];
                sb.append(w == 0 ? "" : " ").append(w % 2 == 0 ? word.toUpperCase(Locale.ROOT) : word);
                expected.merge(word, 1L, Long::sum);
            }
            lines[i] = sb.toString();
        }
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            for (String line : lines) {
                p.send(new ProducerRecord<>(in, null, line));
            }
            p.flush();
        }

        StreamsBuilder b = new StreamsBuilder();
        b.stream(in, Consumed.with(Serdes.String(), Serdes.String()))
            .flatMapValues(v -> Arrays.asList(v.toLowerCase(Locale.ROOT).split(" ")))
            .groupBy((k, word) -> word, Grouped.with("by-word", Serdes.String(), Serdes.String()))
            .count(Materialized.as("counts"))
            .toStream()
            .to(out, Produced.with(Serdes.String(), Serdes.Long()));
        Properties sp = new Properties();
        sp.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        sp.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        sp.put(StreamsConfig.STATE_DIR_CONFIG, args[1]);
        String guarantee = args.length > 2 ? args[2] : StreamsConfig.AT_LEAST_ONCE;
        sp.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        sp.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        sp.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, (int) rf);
        sp.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        sp.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        KafkaStreams streams = new KafkaStreams(b.build(), sp);
        final Throwable[] failure = {null};
        streams.setUncaughtExceptionHandler(e -> {
            failure[0] = e;
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.start();
        System.out.println("streams started");
        System.out.flush();

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, "wc-reader-" + run);
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, guarantee.equals(StreamsConfig.AT_LEAST_ONCE) ? "read_uncommitted" : "read_committed");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
        Map<String, Long> latest = new HashMap<>();
        long deadline = System.currentTimeMillis() + 120_000;
        try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(out));
            while (!latest.equals(expected) && System.currentTimeMillis() < deadline && failure[0] == null) {
                for (ConsumerRecord<String, Long> r : c.poll(Duration.ofMillis(200))) {
                    latest.put(r.key(), r.value());
                }
            }
        }
        streams.close(Duration.ofSeconds(30));
        if (failure[0] != null) {
            System.out.println("FAIL streams-word-count: " + failure[0]);
            failure[0].printStackTrace(System.out);
            System.exit(1);
        }
        if (!latest.equals(expected)) {
            System.out.println("FAIL streams-word-count: counts " + latest + " expected " + expected);
            System.exit(1);
        }
        try (Admin admin = Admin.create(ap)) {
            java.util.Set<String> names = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            String changelog = app + "-counts-changelog";
            String repartition = app + "-by-word-repartition";
            if (!names.contains(changelog) || !names.contains(repartition)) {
                System.out.println("FAIL streams-word-count: internal topics missing from " + names);
                System.exit(1);
            }
            var configs = admin.describeConfigs(List.of(new org.apache.kafka.common.config.ConfigResource(
                    org.apache.kafka.common.config.ConfigResource.Type.TOPIC, changelog))).all().get();
            String policy = configs.values().iterator().next().get("cleanup.policy").value();
            if (!policy.contains("compact")) {
                System.out.println("FAIL streams-word-count: changelog cleanup.policy " + policy);
                System.exit(1);
            }
        }
        System.out.println("PASS streams-word-count (" + expected.size() + " words)");
        System.exit(0);
    }
}
