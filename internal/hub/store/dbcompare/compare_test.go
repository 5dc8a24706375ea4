// Package dbcompare compares the embedded databases considered for the
// hub's --data store on the write the hub makes most: one durable
// (fsync'd) commit of a device's identity record per acknowledged twin
// update. It is a module of its own so that the candidate that was not
// chosen stays out of the hub's go.mod. See docs/hub-persistence.md.
//
//	cd internal/hub/store/dbcompare
//	go test -run XXX -bench . -benchtime 2s
//	go test -run Crash -v
package dbcompare

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ncruces/go-sqlite3"
	bolt "go.etcd.io/bbolt"
)

// record is a device identity record about the size the hub writes for a
// device with a small twin (device, keys, tags, desired, reported with
// $metadata): about 2 KB of JSON.
func record(i int) []byte {
	props := map[string]any{}
	for k := range 12 {
		props[fmt.Sprintf("property%02d", k)] = map[string]any{"value": i + k, "at": "2026-12-06T05:00:00.0000000Z", "unit": "celsius"}
	}
	b, _ := json.Marshal(map[string]any{"v": 1, "device": map[string]any{"deviceId": fmt.Sprintf("dev%05d", i),
		"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]string{"primaryKey": rand.Text(), "secondaryKey": rand.Text()}}},
		"twin": map[string]any{"version": i, "desired": props, "reported": props}})
	return b
}

const keys = 1000

func key(i int) string { return fmt.Sprintf("dev%05d", i%keys) }

// candidate is one database, opened durable.
type candidate struct {
	name string
	open func(dir string) (put func(k string, v []byte) error, putBatch func(k []string, v [][]byte) error, close func() error, err error)
}

func openBolt(dir string) (func(string, []byte) error, func([]string, [][]byte) error, func() error, error) {
	db, err := bolt.Open(filepath.Join(dir, "hub.db"), 0o600, nil) // NoSync false: fdatasync on every commit
	if err != nil {
		return nil, nil, nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("identities")); return err })
	put := func(k string, v []byte) error {
		return db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("identities")).Put([]byte(k), v) })
	}
	batch := func(ks []string, vs [][]byte) error {
		return db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("identities"))
			for i := range ks {
				if err := b.Put([]byte(ks[i]), vs[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return put, batch, db.Close, err
}

func openSQLite(journal, syncMode string) func(dir string) (func(string, []byte) error, func([]string, [][]byte) error, func() error, error) {
	return func(dir string) (func(string, []byte) error, func([]string, [][]byte) error, func() error, error) {
		c, err := sqlite3.Open(filepath.Join(dir, "hub.sqlite"))
		if err != nil {
			return nil, nil, nil, err
		}
		if err := c.Exec("PRAGMA journal_mode=" + journal + "; PRAGMA synchronous=" + syncMode + ";" +
			"CREATE TABLE IF NOT EXISTS identities (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID"); err != nil {
			return nil, nil, nil, err
		}
		st, _, err := c.Prepare("INSERT OR REPLACE INTO identities (k, v) VALUES (?, ?)")
		if err != nil {
			return nil, nil, nil, err
		}
		var mu sync.Mutex // one connection
		exec := func(k string, v []byte) error {
			if err := st.BindText(1, k); err != nil {
				return err
			}
			if err := st.BindBlob(2, v); err != nil {
				return err
			}
			return st.Exec()
		}
		put := func(k string, v []byte) error {
			mu.Lock()
			defer mu.Unlock()
			return exec(k, v)
		}
		batch := func(ks []string, vs [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			if err := c.Exec("BEGIN IMMEDIATE"); err != nil {
				return err
			}
			for i := range ks {
				if err := exec(ks[i], vs[i]); err != nil {
					_ = c.Exec("ROLLBACK")
					return err
				}
			}
			return c.Exec("COMMIT")
		}
		closeFn := func() error { st.Close(); return c.Close() }
		return put, batch, closeFn, nil
	}
}

var candidates = []candidate{
	{"bbolt", openBolt},
	{"sqlite-wal-full", openSQLite("WAL", "FULL")},
	{"sqlite-delete-full", openSQLite("DELETE", "FULL")},
}

// BenchmarkFsyncFloor is the floor: write 2 KB at the end of a file and
// fdatasync it, what any durable commit costs at least once.
func BenchmarkFsyncFloor(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "floor"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	v := record(1)
	for b.Loop() {
		if _, err := f.Write(v); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPut is one durable commit per twin update, as the hub acknowledges
// one write at a time.
func BenchmarkPut(b *testing.B) {
	for _, c := range candidates {
		b.Run(c.name, func(b *testing.B) {
			put, _, closeFn, err := c.open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer closeFn()
			vals := make([][]byte, 64)
			for i := range vals {
				vals[i] = record(i)
			}
			i := 0
			for b.Loop() {
				if err := put(key(i), vals[i%len(vals)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/update")
		})
	}
}

// BenchmarkGroupCommit is 16 twin updates per durable commit, what the
// hub's store writer does when concurrent writes queue up behind a commit.
func BenchmarkGroupCommit(b *testing.B) {
	const n = 16
	for _, c := range candidates {
		b.Run(c.name, func(b *testing.B) {
			_, batch, closeFn, err := c.open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer closeFn()
			ks, vs := make([]string, n), make([][]byte, n)
			vals := make([][]byte, 64)
			for i := range vals {
				vals[i] = record(i)
			}
			i := 0
			for b.Loop() {
				for j := range n {
					ks[j], vs[j] = key(i), vals[i%len(vals)]
					i++
				}
				if err := batch(ks, vs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/update")
		})
	}
}

// crashEnv makes the test binary the child of TestCrash: it writes
// records with one durable commit each and prints the sequence number of
// each acknowledged one, until it is killed.
const crashEnv = "DBCOMPARE_CRASH_CHILD"

func TestCrashChild(t *testing.T) {
	name, dir := os.Getenv(crashEnv), os.Getenv(crashEnv+"_DIR")
	if name == "" {
		t.Skip("the child process of TestCrash")
	}
	for _, c := range candidates {
		if c.name != name {
			continue
		}
		put, _, _, err := c.open(dir)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(os.Stdout)
		for i := 1; ; i++ {
			v, _ := json.Marshal(map[string]any{"seq": i, "pad": string(record(i))})
			if err := put(key(i), v); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(w, i)
			w.Flush()
		}
	}
}

// TestCrash SIGKILLs a writer mid-stream, several times on the same
// files, and checks that the database opens, passes its integrity check
// and holds every acknowledged write.
func TestCrash(t *testing.T) {
	for _, c := range candidates {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			acked := map[string]int{} // key -> highest acknowledged seq
			for round := range 5 {
				cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
				cmd.Env = append(os.Environ(), crashEnv+"="+c.name, crashEnv+"_DIR="+dir)
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				sc := bufio.NewScanner(out)
				var n atomic.Int64
				for sc.Scan() {
					seq, err := strconv.Atoi(sc.Text())
					if err != nil {
						continue
					}
					acked[key(seq)] = seq
					if n.Add(1) == int64(200+100*round) {
						_ = cmd.Process.Kill()
					}
				}
				_ = cmd.Wait()
				verify(t, c, dir, acked)
			}
		})
	}
}

func verify(t *testing.T, c candidate, dir string, acked map[string]int) {
	t.Helper()
	got := map[string]int{}
	switch c.name {
	case "bbolt":
		db, err := bolt.Open(filepath.Join(dir, "hub.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return tx.Bucket([]byte("identities")).ForEach(func(k, v []byte) error {
				var r struct{ Seq int }
				if err := json.Unmarshal(v, &r); err != nil {
					return err
				}
				got[string(k)] = r.Seq
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	default:
		conn, err := sqlite3.Open(filepath.Join(dir, "hub.sqlite"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st, _, err := conn.Prepare("PRAGMA integrity_check")
		if err != nil {
			t.Fatal(err)
		}
		for st.Step() {
			if s := st.ColumnText(0); s != "ok" {
				t.Fatalf("integrity_check: %s", s)
			}
		}
		st.Close()
		st, _, err = conn.Prepare("SELECT k, v FROM identities")
		if err != nil {
			t.Fatal(err)
		}
		for st.Step() {
			var r struct{ Seq int }
			if err := json.Unmarshal([]byte(st.ColumnText(1)), &r); err != nil {
				t.Fatal(err)
			}
			got[st.ColumnText(0)] = r.Seq
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	for k, seq := range acked {
		if got[k] < seq {
			t.Fatalf("%s: acknowledged seq %d, found %d after the crash", k, seq, got[k])
		}
	}
	t.Logf("%d acknowledged keys all present", len(acked))
}
