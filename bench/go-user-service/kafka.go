package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// probeInterval is how often a partition that has stopped advancing before
	// reaching its start-up end offset is examined directly (see probe).
	probeInterval = 500 * time.Millisecond
	// probeMaxBytes bounds a single probe fetch.
	probeMaxBytes = 1 << 20
)

// partitioner returns the producer partitioner. Every record is keyed by
// email, so only the key hashing matters, and it must agree with every other
// writer of the topic: a key that lands on two partitions loses its ordering
// and is never compacted away.
//
//   - "murmur2": Java's default partitioner and librdkafka's
//     "murmur2"/"murmur2_random": murmur2(key) & 0x7fffffff % partitions.
//   - "consistent": librdkafka's own default ("consistent_random"), used by
//     confluent-kafka-python unless "partitioner" is configured:
//     crc32(key) % partitions.
func partitioner(name string) (kgo.Partitioner, error) {
	switch name {
	case "murmur2":
		// A nil hasher is franz-go's Java-compatible murmur2 hasher.
		return kgo.StickyKeyPartitioner(nil), nil
	case "consistent":
		return kgo.StickyKeyPartitioner(func(key []byte, n int) int {
			// Unsigned modulo, exactly like librdkafka's rd_crc32(key) % n.
			return int(crc32.ChecksumIEEE(key) % uint32(n))
		}), nil
	}
	return nil, fmt.Errorf("unknown partitioner %q (want murmur2 or consistent)", name)
}

// newProducer returns the client used to produce and for admin requests.
// Idempotence and acks=all are franz-go's defaults and are kept.
func newProducer(cfg config) (*kgo.Client, error) {
	part, err := partitioner(cfg.partitioner)
	if err != nil {
		return nil, err
	}
	return kgo.NewClient(
		kgo.SeedBrokers(cfg.brokers...),
		kgo.ClientID("go-user-service"),
		kgo.DefaultProduceTopic(cfg.topic),
		kgo.RecordPartitioner(part),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Every write waits for its own acknowledgement (one record per HTTP
		// request): do not hold it back for batching. franz-go's default linger
		// is 10 ms, which would add up to that much to every PUT.
		kgo.ProducerLinger(0),
		// Values are tiny JSON documents; compression would only cost CPU.
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		// Fail records that cannot be delivered in time rather than letting
		// them sit in the buffer forever while the broker is unreachable.
		kgo.RecordDeliveryTimeout(produceTimeout),
		kgo.WithLogger(kgo.BasicLogger(logWriter{}, kgo.LogLevelWarn, nil)),
	)
}

// syncer keeps a Store in sync with the topic.
type syncer struct {
	cfg   config
	store *Store
	prod  *kgo.Client // shared with the HTTP side; used here for admin requests
	adm   *kadm.Client
}

func newSyncer(cfg config, store *Store, prod *kgo.Client) *syncer {
	return &syncer{cfg: cfg, store: store, prod: prod, adm: kadm.NewClient(prod)}
}

// Run takes the start-up snapshot (retrying until the broker and topic are
// available), then consumes the topic until ctx is canceled.
func (s *syncer) Run(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		start, end, err := s.snapshot(ctx)
		if err == nil {
			log.Printf("topic %q: %d partitions, end offsets %v", s.cfg.topic, len(end), end)
			s.store.SetStart(start, end)
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Printf("waiting for topic %q: %v", s.cfg.topic, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}

	cons, err := kgo.NewClient(
		kgo.SeedBrokers(s.cfg.brokers...),
		kgo.ClientID("go-user-service"),
		// Without a consumer group, franz-go assigns every partition of the
		// topic to this client directly: no coordinator, no rebalances, no
		// committed offsets. Partitions added later are picked up too.
		kgo.ConsumeTopics(s.cfg.topic),
		kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()),
		// If our position ever falls out of the log (e.g. records deleted
		// under us), re-read from the start: the view must be rebuilt from
		// the full history, never from a guessed point.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Surface transaction markers so their offsets count towards the
		// position; the store skips them when applying.
		kgo.KeepControlRecords(),
		// Larger per-partition fetches speed up the initial replay.
		kgo.FetchMaxPartitionBytes(8<<20),
		kgo.WithLogger(kgo.BasicLogger(logWriter{}, kgo.LogLevelWarn, nil)),
	)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer cons.Close()

	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		s.probeLoop(ctx)
	}()
	defer func() { <-probeDone }()

	for {
		fetches := cons.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			log.Printf("fetch %s/%d: %v", t, p, err)
		})
		s.store.Apply(fetches)
	}
}

// snapshot returns the log start and end (high watermark) offsets of every
// partition of the topic.
func (s *syncer) snapshot(ctx context.Context) (start, end map[int32]int64, err error) {
	md, err := s.adm.Metadata(ctx, s.cfg.topic)
	if err != nil {
		return nil, nil, err
	}
	td, ok := md.Topics[s.cfg.topic]
	switch {
	case !ok:
		return nil, nil, kerr.UnknownTopicOrPartition
	case td.Err != nil:
		return nil, nil, td.Err
	case len(td.Partitions) == 0:
		return nil, nil, errors.New("topic has no partitions")
	}

	list := func(fn func(context.Context, ...string) (kadm.ListedOffsets, error)) (map[int32]int64, error) {
		lo, err := fn(ctx, s.cfg.topic)
		if err == nil {
			err = lo.Error()
		}
		if err != nil {
			return nil, err
		}
		out := make(map[int32]int64, len(td.Partitions))
		for p := range td.Partitions {
			o, ok := lo.Lookup(s.cfg.topic, p)
			if !ok {
				return nil, fmt.Errorf("no offset listed for partition %d", p)
			}
			out[p] = o.Offset
		}
		return out, nil
	}
	if start, err = list(s.adm.ListStartOffsets); err != nil {
		return nil, nil, fmt.Errorf("list start offsets: %w", err)
	}
	if end, err = list(s.adm.ListEndOffsets); err != nil {
		return nil, nil, fmt.Errorf("list end offsets: %w", err)
	}
	return start, end, nil
}

// probeLoop runs until the store is ready. franz-go tracks the true fetch
// position internally but only hands out records, so offsets that carry no
// record at the tail of a partition are invisible to us: batches emptied by
// compaction (kept for idempotent-producer state) or a log whose last records
// were cleaned away. Without help, such a partition would look forever behind
// its end offset and the service would never become ready. When a lagging
// partition stops advancing, probe it directly.
func (s *syncer) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	last := make(map[int32]int64)
	for !s.store.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for p, pos := range s.store.Lagging() {
			if prev, seen := last[p]; seen && prev == pos {
				next, err := s.probe(ctx, p, pos)
				if err != nil {
					if ctx.Err() == nil {
						log.Printf("probe %s/%d at %d: %v", s.cfg.topic, p, pos, err)
					}
					continue
				}
				s.store.Advance(p, next)
			}
			last[p] = pos
		}
	}
}

// probe fetches partition p from offset pos and returns the furthest offset
// up to which the log is known to contain no user records: the offset of the
// first user record at or after pos, or, if the response holds none, the
// offset just past everything it covered. Advancing the position to that
// offset never skips data; records from there on are still delivered (and
// applied) by the regular consumer.
func (s *syncer) probe(ctx context.Context, p int32, pos int64) (int64, error) {
	md, err := s.adm.Metadata(ctx, s.cfg.topic)
	if err != nil {
		return pos, err
	}
	td := md.Topics[s.cfg.topic]
	pd, ok := td.Partitions[p]
	if !ok || pd.Leader < 0 {
		return pos, fmt.Errorf("no leader for partition %d", p)
	}

	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = 0 // answer with whatever is there, right away
	req.MaxBytes = probeMaxBytes
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = s.cfg.topic
	rt.TopicID = td.ID // used instead of the name by Fetch v13+
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = p
	rp.FetchOffset = pos
	rp.PartitionMaxBytes = probeMaxBytes
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)

	resp, err := req.RequestWith(ctx, s.prod.Broker(int(pd.Leader)))
	if err != nil {
		return pos, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return pos, err
	}
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			part := &resp.Topics[i].Partitions[j]
			if part.Partition != p {
				continue
			}
			switch err := kerr.ErrorForCode(part.ErrorCode); {
			case err == nil:
			case errors.Is(err, kerr.OffsetOutOfRange) && part.LogStartOffset > pos:
				// The records below the log start are gone; the consumer
				// resets to the log start as well.
				return part.LogStartOffset, nil
			default:
				return pos, err
			}
			fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				Offset:    pos,
				Topic:     s.cfg.topic,
				Partition: p,
			}, part, kgo.DefaultDecompressor(), nil)
			if len(fp.Records) > 0 {
				next = fp.Records[0].Offset
			}
			return next, nil
		}
	}
	return pos, fmt.Errorf("partition %d missing from fetch response", p)
}

// logWriter routes franz-go's logger through the standard logger.
type logWriter struct{}

func (logWriter) Write(b []byte) (int, error) {
	log.Print(string(b))
	return len(b), nil
}
