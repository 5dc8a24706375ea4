// Package store keeps the local hub's state on disk for "iothub hub
// --data DIR": one bbolt database file whose buckets hold the identity
// records (a device with its modules, twins and cloud-to-device queue),
// the jobs and a few hub-wide values. The engine encodes and decodes the
// records; this package only stores bytes under keys, durably and in
// order.
//
// Writes are queued by Put and Delete, which never wait for the disk, and
// committed in the order they were queued by one writer goroutine, many
// at a time when they queue up behind a commit (group commit). A write is
// durable, fsync'd with the commit that holds it, when its Ticket's Wait
// returns nil. The engine queues a write while it holds its own lock, so
// the store's order is the engine's order, and waits after releasing it,
// before it acknowledges the operation. docs/hub-persistence.md says why
// bbolt, and what a crash keeps.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets of the database.
const (
	// Identities holds one record per device (its modules, twins and
	// cloud-to-device queue included), keyed by device id.
	Identities = "identities"
	// Jobs holds one record per job, keyed by job id.
	Jobs = "jobs"
	// Meta holds hub-wide values: the shared access policies, the hub
	// clock's offset, the etag counter, the format version.
	Meta = "meta"
)

// FileName is the database's file name in the data directory.
const FileName = "hub.db"

// formatKey names the format version in Meta; formatVersion is this
// package's.
const (
	formatKey     = "format"
	formatVersion = "1"
)

// Store is an open database. Its methods are safe for concurrent use.
type Store struct {
	db *bolt.DB

	mu      sync.Mutex
	queue   []op
	closed  bool
	kick    chan struct{} // capacity 1: there is work or Close was called
	done    chan struct{} // closed when the writer goroutine ends
	commits uint64        // commits made, for Stats
	writes  uint64        // writes committed, for Stats
}

type op struct {
	bucket, key string
	val         []byte // nil: delete
	t           *Ticket
	slot        *Slot // set for Reserve: the bytes come later
}

// Slot is a write whose place in the order is taken (Reserve) and whose
// bytes are given later (Fill), so that a caller can take its place
// while it holds its own lock and encode the record after releasing it.
type Slot struct {
	s      *Store
	fill   func(val []byte, err error) *Ticket // SlotFunc's
	t      *Ticket
	filled bool // guarded by s.mu
	val    []byte
	err    error
}

// Ticket is the outcome of one queued write.
type Ticket struct {
	done chan struct{}
	err  error
}

// Wait blocks until the write is committed (nil: it is on disk) or has
// failed.
func (t *Ticket) Wait() error {
	if t == nil {
		return nil
	}
	<-t.done
	return t.err
}

// Done returns a Ticket that is already settled with err (nil for a
// success), for fakes and for writes refused before they are queued.
func Done(err error) *Ticket {
	t := &Ticket{done: make(chan struct{}), err: err}
	close(t.done)
	return t
}

// Open opens or creates the database in dir, which it creates if needed.
// It fails at once, with an error that says so, when another process
// holds the database.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("iothub: data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("iothub: %s is in use by another hub", path)
	}
	if err != nil {
		return nil, fmt.Errorf("iothub: opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{Identities, Jobs, Meta} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		m := tx.Bucket([]byte(Meta))
		switch v := m.Get([]byte(formatKey)); {
		case v == nil:
			return m.Put([]byte(formatKey), []byte(formatVersion))
		case string(v) != formatVersion:
			return fmt.Errorf("format version %q, this hub reads %q", clip(v), formatVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("iothub: %s: %w", path, err)
	}
	s := &Store{db: db, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go s.writer()
	return s, nil
}

func clip(b []byte) string {
	if len(b) > 16 {
		b = b[:16]
	}
	return string(b)
}

// Load calls fn for every stored record, bucket by bucket (Meta first,
// then Identities, then Jobs), in key order. val is valid only during the
// call. An error from fn ends the walk and is returned.
func (s *Store) Load(fn func(bucket, key string, val []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		for _, name := range []string{Meta, Identities, Jobs} {
			b := tx.Bucket([]byte(name))
			if b == nil {
				continue
			}
			if err := b.ForEach(func(k, v []byte) error {
				if v == nil { // a nested bucket: none are written
					return nil
				}
				return fn(name, string(k), v)
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

// Put queues val under key in bucket. It does not wait for the disk:
// the Ticket does.
func (s *Store) Put(bucket, key string, val []byte) *Ticket {
	if val == nil {
		val = []byte{}
	}
	return s.enqueue(op{bucket: bucket, key: key, val: val})
}

// Delete queues the removal of key from bucket.
func (s *Store) Delete(bucket, key string) *Ticket {
	return s.enqueue(op{bucket: bucket, key: key})
}

// Reserve takes the next place in the order for a write to bucket/key
// whose bytes Fill gives. The writer commits nothing queued after it until
// it is filled, so every Reserve must be followed by a Fill.
func (s *Store) Reserve(bucket, key string) *Slot {
	sl := &Slot{s: s}
	sl.t = s.enqueue(op{bucket: bucket, key: key, slot: sl})
	return sl
}

// Fill gives the slot's bytes (nil val: a delete), or the error that
// prevented encoding them (the write is then not made and the Ticket
// fails with it). It returns the slot's Ticket.
func (sl *Slot) Fill(val []byte, err error) *Ticket {
	if sl.fill != nil {
		return sl.fill(val, err)
	}
	s := sl.s
	s.mu.Lock()
	sl.val, sl.err, sl.filled = val, err, true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return sl.t
}

// SlotFunc returns a Slot whose Fill calls fill, for fakes of a store.
func SlotFunc(fill func(val []byte, err error) *Ticket) *Slot { return &Slot{fill: fill} }

var errClosed = errors.New("iothub: the hub's store is closed")

func (s *Store) enqueue(o op) *Ticket {
	o.t = &Ticket{done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Done(errClosed)
	}
	s.queue = append(s.queue, o)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return o.t
}

// writer commits the queue, everything queued so far (up to the first
// slot not filled yet) in one transaction, until Close.
func (s *Store) writer() {
	defer close(s.done)
	for {
		<-s.kick
		s.mu.Lock()
		n := 0
		for n < len(s.queue) {
			if sl := s.queue[n].slot; sl != nil && !sl.filled {
				break
			}
			n++
		}
		ops := append([]op(nil), s.queue[:n]...)
		s.queue = append(s.queue[:0], s.queue[n:]...)
		idle := s.closed && len(s.queue) == 0
		s.mu.Unlock()
		if len(ops) > 0 {
			s.commit(ops)
		}
		if idle {
			return
		}
	}
}

// commit writes ops in one transaction and settles their tickets.
func (s *Store) commit(ops []op) {
	written := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range ops {
			val := o.val
			if sl := o.slot; sl != nil {
				if sl.err != nil {
					continue // not encoded: its ticket fails alone
				}
				val = sl.val
			}
			b := tx.Bucket([]byte(o.bucket))
			if b == nil {
				return fmt.Errorf("no bucket %q", o.bucket)
			}
			var err error
			if val == nil {
				err = b.Delete([]byte(o.key))
			} else {
				err = b.Put([]byte(o.key), val)
			}
			if err != nil {
				return err
			}
			written++
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("iothub: storing the hub's state: %w", err)
	}
	s.mu.Lock()
	s.commits++
	s.writes += uint64(written)
	s.mu.Unlock()
	for _, o := range ops {
		o.t.err = err
		if o.slot != nil && o.slot.err != nil {
			o.t.err = o.slot.err
		}
		close(o.t.done)
	}
}

// Stats reports how many commits the writer made and how many writes
// they held (writes/commits is the group-commit factor).
func (s *Store) Stats() (commits, writes uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits, s.writes
}

// Close commits what is queued, stops the writer and closes the
// database. Writes queued after Close fail.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("iothub: closing the hub's store: %w", err)
	}
	return nil
}
