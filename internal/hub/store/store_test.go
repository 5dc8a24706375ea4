package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func load(t *testing.T, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, s.Load(func(bucket, key string, val []byte) error {
		out[bucket+"/"+key] = string(val)
		return nil
	}))
	return out
}

// TestStoreOrderAndReopen: writes queued from many goroutines are all
// committed, in the order each goroutine queued them, and are there after
// a reopen.
func TestStoreOrderAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last *Ticket
			for i := range 50 {
				last = s.Put(Identities, fmt.Sprintf("k%d", g), []byte(fmt.Sprint(i)))
			}
			s.Put(Jobs, fmt.Sprintf("gone%d", g), []byte("x"))
			last = s.Delete(Jobs, fmt.Sprintf("gone%d", g))
			assert.NoError(t, last.Wait())
		}()
	}
	wg.Wait()
	commits, writes := s.Stats()
	assert.Equal(t, uint64(8*52), writes)
	assert.LessOrEqual(t, commits, writes)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "a second Close")
	require.Error(t, s.Put(Meta, "k", nil).Wait(), "a write after Close")

	s, err = Open(dir)
	require.NoError(t, err)
	defer s.Close()
	got := load(t, s)
	for g := range 8 {
		assert.Equal(t, "49", got[fmt.Sprintf("identities/k%d", g)])
		assert.NotContains(t, got, fmt.Sprintf("jobs/gone%d", g))
	}
	assert.Equal(t, formatVersion, got["meta/"+formatKey])
}

// TestStoreInUse: a second Open of a directory in use fails at once.
func TestStoreInUse(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	defer s.Close()
	_, err = Open(dir)
	require.ErrorContains(t, err, "in use by another hub")
}

// TestStoreBadFiles: a newer format, or a file that is no database, is
// refused with an "iothub: " error.
func TestStoreBadFiles(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte(Meta))
		if err != nil {
			return err
		}
		return b.Put([]byte(formatKey), []byte("99"))
	}))
	require.NoError(t, db.Close())
	_, err = Open(dir)
	require.ErrorContains(t, err, "format version")
	require.Regexp(t, "^iothub: ", err.Error())

	dir = t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), []byte("not a database, not at all, no no no"), 0o600))
	_, err = Open(dir)
	require.Error(t, err)
	require.Regexp(t, "^iothub: ", err.Error())
}

// TestStoreSlots: a reserved write keeps its place: a later write of the
// same key, committed while the slot waits, is not overwritten by it; a
// slot filled with an error fails alone.
func TestStoreSlots(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	sl := s.Reserve(Identities, "k")
	later := s.Put(Identities, "k", []byte("new"))
	other := s.Put(Identities, "other", []byte("x"))
	require.NoError(t, sl.Fill([]byte("old"), nil).Wait())
	require.NoError(t, later.Wait())
	require.NoError(t, other.Wait())

	bad := s.Reserve(Identities, "bad")
	fine := s.Put(Identities, "fine", []byte("y"))
	require.ErrorContains(t, bad.Fill(nil, errors.New("iothub: cannot encode")).Wait(), "cannot encode")
	require.NoError(t, fine.Wait())
	gone := s.Reserve(Identities, "other")
	require.NoError(t, gone.Fill(nil, nil).Wait(), "a delete through a slot")
	require.NoError(t, s.Close())

	s, err = Open(dir)
	require.NoError(t, err)
	defer s.Close()
	got := load(t, s)
	assert.Equal(t, "new", got["identities/k"])
	assert.Equal(t, "y", got["identities/fine"])
	assert.NotContains(t, got, "identities/bad")
	assert.NotContains(t, got, "identities/other")
}
