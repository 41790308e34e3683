package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Store is the in-memory materialised view of the topic (email -> user JSON)
// together with the bookkeeping needed for readiness and read-your-writes:
// the next offset to consume per partition and the end offsets observed at
// start-up.
//
// Positions are "next offset to consume", not record counts. A compacted topic
// has holes in its offsets, so counting records would never reach the end
// offset; comparing positions is exact.
type Store struct {
	mu sync.RWMutex
	// users holds the latest value per key. Values are immutable once stored
	// (an update replaces the slice), so readers may keep references after
	// releasing the lock.
	users map[string][]byte
	// pos is the next offset to consume per partition. It only moves forward.
	pos map[int32]int64
	// target is the end offset (high watermark) of each partition taken at
	// start-up; nil until the start-up snapshot has been taken.
	target map[int32]int64
	// changed is closed (and replaced) whenever any position advances, waking
	// every goroutine blocked in WaitApplied so it can re-check its offset.
	changed chan struct{}

	ready     atomic.Bool
	startedAt time.Time
}

// NewStore returns an empty store that is not ready.
func NewStore() *Store {
	return &Store{
		users:     make(map[string][]byte),
		pos:       make(map[int32]int64),
		changed:   make(chan struct{}),
		startedAt: time.Now(),
	}
}

// Ready reports whether every partition has been consumed up to the end
// offset seen at start-up. Once true it stays true.
func (s *Store) Ready() bool { return s.ready.Load() }

// Get returns the stored JSON for email.
func (s *Store) Get(email string) ([]byte, bool) {
	s.mu.RLock()
	v, ok := s.users[email]
	s.mu.RUnlock()
	return v, ok
}

// AllJSON renders every user as a JSON array, ordered by email so the output
// is deterministic. The lock is held only to copy slice headers; sorting and
// rendering happen outside it so a large listing does not stall the consumer.
func (s *Store) AllJSON() []byte {
	type entry struct {
		email string
		value []byte
	}
	s.mu.RLock()
	entries := make([]entry, 0, len(s.users))
	size := 2
	for k, v := range s.users {
		entries = append(entries, entry{k, v})
		size += len(v) + 1
	}
	s.mu.RUnlock()

	slices.SortFunc(entries, func(a, b entry) int {
		switch {
		case a.email < b.email:
			return -1
		case a.email > b.email:
			return 1
		}
		return 0
	})
	out := make([]byte, 0, size)
	out = append(out, '[')
	for i, e := range entries {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, e.value...)
	}
	return append(out, ']')
}

// SetStart records the start-up snapshot: consumption of each partition starts
// at its log start offset and the store becomes ready once every partition
// reaches its end offset. Partitions that are already empty (start >= end)
// are caught up immediately.
func (s *Store) SetStart(start, end map[int32]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.target = end
	for p, off := range start {
		if off > s.pos[p] {
			s.pos[p] = off
		}
	}
	s.checkReadyLocked()
}

// Apply folds a batch of polled records into the view. The whole poll is
// applied under one lock acquisition, and waiters are woken once per poll.
func (s *Store) Apply(fetches kgo.Fetches) {
	advanced := false
	s.mu.Lock()
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		for _, r := range ftp.Records {
			// Transaction markers carry no user data, but they occupy an
			// offset and must count towards the position.
			if !r.Attrs.IsControl() {
				s.applyRecordLocked(r)
			}
			if next := r.Offset + 1; next > s.pos[r.Partition] {
				s.pos[r.Partition] = next
				advanced = true
			}
		}
	})
	if advanced {
		s.checkReadyLocked()
		s.broadcastLocked()
	}
	s.mu.Unlock()
}

func (s *Store) applyRecordLocked(r *kgo.Record) {
	if r.Key == nil {
		return // not ours: every user record is keyed by email
	}
	key := string(r.Key) // copies
	if r.Value == nil {
		delete(s.users, key) // tombstone
		return
	}
	if !json.Valid(r.Value) {
		// A foreign writer produced something that is not JSON; serving it
		// would corrupt GET /users for everyone, so keep the previous value.
		log.Printf("skipping non-JSON value for key %q at %d/%d", key, r.Partition, r.Offset)
		return
	}
	// Clone: the record's value aliases the fetch buffer, and keeping a
	// sub-slice would pin the whole (up to several MiB) buffer in memory.
	s.users[key] = bytes.Clone(r.Value)
}

// Advance moves a partition's position forward to next without applying
// anything. It is used when the offsets in between are known to hold no user
// records (compaction gaps, transaction markers, empty batches).
func (s *Store) Advance(p int32, next int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if next > s.pos[p] {
		s.pos[p] = next
		s.checkReadyLocked()
		s.broadcastLocked()
	}
}

// Lagging returns the position of every partition that has not yet reached
// its start-up end offset.
func (s *Store) Lagging() map[int32]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	lag := make(map[int32]int64)
	for p, end := range s.target {
		if pos := s.pos[p]; pos < end {
			lag[p] = pos
		}
	}
	return lag
}

// WaitApplied blocks until the record at offset off in partition p has been
// applied to the view (read-your-writes), or ctx is done.
func (s *Store) WaitApplied(ctx context.Context, p int32, off int64) error {
	for {
		s.mu.RLock()
		done := s.pos[p] > off
		ch := s.changed
		s.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Store) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Store) checkReadyLocked() {
	if s.ready.Load() || s.target == nil {
		return
	}
	for p, end := range s.target {
		if s.pos[p] < end {
			return
		}
	}
	s.ready.Store(true)
	log.Printf("caught up: %d users from %d partitions in %s",
		len(s.users), len(s.target), time.Since(s.startedAt).Round(time.Millisecond))
}
