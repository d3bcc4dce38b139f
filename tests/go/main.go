// Go clients against one broker: franz-go (kgo + kadm), sarama and segmentio/kafka-go,
// each creating a topic with its admin API, producing, consuming in a group and
// committing; then transactions: franz-go and sarama transactional producers commit two
// transactions around an aborted one, and franz-go, sarama and kafka-go read_committed
// consumers must see the committed records only. Prints "PASS name" / "FAIL name:
// reason"; exits with the failure count.
// Run by tests/test_go_clients.py against a real ringmqd.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/IBM/sarama"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const n = 500

func main() {
	bootstrap := os.Args[1]
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	failures := 0
	for _, c := range []struct {
		name string
		f    func(string, string) error
	}{
		{"franz-go", franz},
		{"sarama", saramaCheck},
		{"kafka-go", kafkaGo},
		{"franz-go transactions", franzTxn},
		{"sarama transactions + kafka-go read_committed", saramaTxn},
	} {
		start := time.Now()
		if err := c.f(bootstrap, run); err != nil {
			failures++
			fmt.Printf("FAIL %s: %v\n", c.name, err)
		} else {
			fmt.Printf("PASS %s (%d ms)\n", c.name, time.Since(start).Milliseconds())
		}
	}
	os.Exit(failures)
}

func values() []string {
	v := make([]string, n)
	for i := range v {
		v[i] = fmt.Sprintf("value-%04d", i)
	}
	return v
}

func same(got []string) error {
	sort.Strings(got)
	want := values()
	if len(got) != len(want) {
		return fmt.Errorf("consumed %d of %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("record %d: %q != %q", i, got[i], want[i])
		}
	}
	return nil
}

// franz-go: kadm creates and describes, an idempotent kgo producer, a group consumer
// that commits, then kadm reads the committed offsets and lag.
func franz(bootstrap, run string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topic, group := "franz-"+run, "franz-group-"+run
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	created, err := adm.CreateTopics(ctx, 3, 1, map[string]*string{"retention.ms": kadm.StringPtr("3600000")}, topic)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if e := created[topic].Err; e != nil {
		return fmt.Errorf("create: %w", e)
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil || details[topic].Err != nil || len(details[topic].Partitions) != 3 {
		return fmt.Errorf("list topics: %v %+v", err, details[topic])
	}
	for _, v := range values() {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	consumer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if err != nil {
		return err
	}
	var got []string
	for len(got) < n && ctx.Err() == nil {
		fetches := consumer.PollFetches(ctx)
		if errs := fetches.Errors(); len(errs) > 0 {
			consumer.Close()
			return fmt.Errorf("poll: %v", errs)
		}
		fetches.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		consumer.Close()
		return fmt.Errorf("commit: %w", err)
	}
	consumer.Close()
	if err := same(got); err != nil {
		return err
	}
	lag, err := adm.Lag(ctx, group)
	if err != nil {
		return fmt.Errorf("lag: %w", err)
	}
	if l := lag[group]; l.Error() != nil || l.Lag.Total() != 0 {
		return fmt.Errorf("lag after commit: %v total %d", l.Error(), l.Lag.Total())
	}
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	return nil
}

func saramaCheck(bootstrap, run string) error {
	topic, group := "sarama-"+run, "sarama-group-"+run
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	if err != nil {
		return err
	}
	for _, v := range values() {
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(v)}); err != nil {
			producer.Close()
			return fmt.Errorf("send: %w", err)
		}
	}
	producer.Close()
	cg, err := sarama.NewConsumerGroup([]string{bootstrap}, group, cfg)
	if err != nil {
		return err
	}
	defer cg.Close()
	h := &saramaHandler{done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil {
				return
			}
		}
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
	}
	cancel()
	if err := same(h.got); err != nil {
		return err
	}
	offsets, err := admin.ListConsumerGroupOffsets(group, nil)
	if err != nil {
		return fmt.Errorf("offsets: %w", err)
	}
	var committed int64
	for _, ps := range offsets.Blocks {
		for _, b := range ps {
			committed += b.Offset
		}
	}
	if committed != n {
		return fmt.Errorf("committed %d", committed)
	}
	return nil
}

type saramaHandler struct {
	got  []string
	done chan struct{}
}

func (h *saramaHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.got = append(h.got, string(m.Value))
		s.MarkMessage(m, "")
		if len(h.got) == n {
			s.Commit()
			close(h.done)
		}
	}
	return nil
}

func kafkaGo(bootstrap, run string) error {
	topic, group := "kafkago-"+run, "kafkago-group-"+run
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn, err := kafkago.DialContext(ctx, "tcp", bootstrap)
	if err != nil {
		return err
	}
	if err := conn.CreateTopics(kafkago.TopicConfig{Topic: topic, NumPartitions: 2, ReplicationFactor: 1}); err != nil {
		conn.Close()
		return fmt.Errorf("create: %w", err)
	}
	conn.Close()
	w := &kafkago.Writer{Addr: kafkago.TCP(bootstrap), Topic: topic, RequiredAcks: kafkago.RequireAll, BatchTimeout: 10 * time.Millisecond}
	var msgs []kafkago.Message
	for _, v := range values() {
		msgs = append(msgs, kafkago.Message{Value: []byte(v)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		w.Close()
		return fmt.Errorf("write: %w", err)
	}
	w.Close()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{bootstrap}, Topic: topic, GroupID: group,
		StartOffset: kafkago.FirstOffset, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	var got []string
	for len(got) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("fetch after %d: %w", len(got), err)
		}
		got = append(got, string(m.Value))
		if err := r.CommitMessages(ctx, m); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	return same(got)
}

// Two committed transactions around an aborted one, as the three parts of the values.
func txnParts() [][]string {
	v := values()
	aborted := make([]string, 50)
	for i := range aborted {
		aborted[i] = fmt.Sprintf("aborted-%02d", i)
	}
	return [][]string{v[:n/2], aborted, v[n/2:]}
}

// franz-go: a transactional client (BeginTransaction / EndTransaction) and a
// read_committed consumer.
func franzTxn(bootstrap, run string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topic := "franz-tx-" + run
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.TransactionalID("franz-tid-"+run),
		kgo.DefaultProduceTopic(topic))
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, nil, topic); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	for i, part := range txnParts() {
		if err := cl.BeginTransaction(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		for _, v := range part {
			cl.Produce(ctx, &kgo.Record{Value: []byte(v)}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(i != 1)); err != nil {
			return fmt.Errorf("end transaction %d: %w", i, err)
		}
	}
	consumer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return err
	}
	defer consumer.Close()
	var got []string
	settle := time.Now().Add(3 * time.Second)
	for time.Now().Before(settle) && ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := consumer.PollFetches(pctx)
		pcancel()
		fetches.EachRecord(func(r *kgo.Record) {
			got = append(got, string(r.Value))
			settle = time.Now().Add(3 * time.Second)
		})
	}
	return same(got)
}

// sarama: a transactional producer (BeginTxn / CommitTxn / AbortTxn), read back by a
// sarama read_committed consumer and a kafka-go one.
func saramaTxn(bootstrap, run string) error {
	topic := "sarama-tx-" + run
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Producer.Transaction.ID = "sarama-tid-" + run
	cfg.Net.MaxOpenRequests = 1
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	if err != nil {
		return err
	}
	for i, part := range txnParts() {
		if err := producer.BeginTxn(); err != nil {
			producer.Close()
			return fmt.Errorf("begin: %w", err)
		}
		for _, v := range part {
			if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(v)}); err != nil {
				producer.Close()
				return fmt.Errorf("send: %w", err)
			}
		}
		end := producer.CommitTxn
		if i == 1 {
			end = producer.AbortTxn
		}
		if err := end(); err != nil {
			producer.Close()
			return fmt.Errorf("end transaction %d: %w", i, err)
		}
	}
	producer.Close()
	consumer, err := sarama.NewConsumer([]string{bootstrap}, cfg)
	if err != nil {
		return err
	}
	defer consumer.Close()
	var got []string
	for p := int32(0); p < 2; p++ {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				got = append(got, string(m.Value))
			case <-time.After(3 * time.Second):
				done = true
			}
		}
		pc.Close()
	}
	if err := same(got); err != nil {
		return fmt.Errorf("sarama read_committed: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got = nil
	for p := 0; p < 2; p++ {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{bootstrap}, Topic: topic, Partition: p,
			IsolationLevel: kafkago.ReadCommitted, MaxWait: 200 * time.Millisecond})
		for {
			rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
			m, err := r.ReadMessage(rctx)
			rcancel()
			if err != nil {
				break
			}
			// kafka-go hands out aborted records and the markers' control records
			// even read_committed, against Kafka too (segmentio/kafka-go#1332): what
			// is checked here is that it reads past the transactions and gets every
			// committed record.
			if v := string(m.Value); strings.HasPrefix(v, "value-") {
				got = append(got, v)
			}
		}
		r.Close()
	}
	if err := same(got); err != nil {
		return fmt.Errorf("kafka-go read_committed: %w", err)
	}
	return nil
}
