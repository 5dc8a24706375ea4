package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/amqpd"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/testutil/pkitest"
)

// The go-amqp memory floor for many device identities on one AMQP
// connection (issue 21). This is a measurement, not a check: it asserts
// nothing about the figures and is skipped unless IOTHUB_AMQP_FLOOR=1.
//
//	IOTHUB_AMQP_FLOOR=1 go test -count=1 -run '^TestAMQPFloor$' -v -timeout 30m ./internal/bench/
//
// The hub runs in a child process (this test binary, role "hub"), and
// every (layout, N) case runs in its own fresh client child process (role
// "client") that holds one go-amqp connection over TLS and nothing else,
// so the client's heap and RSS growth are not mixed with the hub's and
// no case inherits another's freed pages. IOTHUB_AMQP_FLOOR_N overrides the
// device counts (comma separated, default 1000,5000).

const (
	floorEnv     = "IOTHUB_AMQP_FLOOR"
	floorRoleEnv = "IOTHUB_AMQP_FLOOR_ROLE"
	floorDirEnv  = "IOTHUB_AMQP_FLOOR_DIR"
	floorCaseEnv = "IOTHUB_AMQP_FLOOR_CASE"
	floorHost    = "floor-hub.azure-devices.net"
)

// floorHubInfo is what the hub child hands to the client children.
type floorHubInfo struct {
	Addr   string
	CA     []byte   // DER of the CA that issued the hub's certificate
	Owner  string   // iothubowner token for the hub audience
	IDs    []string // registered device ids
	Tokens []string // device SAS tokens, by index
}

// floorCase is one client child's job.
type floorCase struct {
	Layout   string // see runFloorClient
	N        int
	Credit   int32  // receiver credit (0: go-amqp default)
	MaxLinks uint32 // per-device SessionOptions.MaxLinks (0: default)
}

// floorResult is what a client child reports.
type floorResult struct {
	Case            floorCase
	Auth            string
	Before, After   Mem
	HeapInuseDelta  int64
	Elapsed         time.Duration
	PerDevHeap      float64
	PerDevRSS       float64
	PerDevStack     float64
	PerDevGoroutine float64
}

func TestAMQPFloor(t *testing.T) {
	if os.Getenv(floorEnv) != "1" || os.Getenv(floorRoleEnv) != "" {
		t.Skip("measurement, not a check: set " + floorEnv + "=1 to run it")
	}
	ns := []int{1000, 5000}
	if s := os.Getenv("IOTHUB_AMQP_FLOOR_N"); s != "" {
		ns = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			require.NoError(t, err)
			ns = append(ns, n)
		}
	}
	maxN := 0
	for _, n := range ns {
		maxN = max(maxN, n)
	}
	dir := t.TempDir()

	hub := exec.Command(os.Args[0], "-test.run=^TestAMQPFloorHub$", "-test.count=1")
	hub.Env = append(os.Environ(), floorRoleEnv+"=hub", floorDirEnv+"="+dir, "IOTHUB_AMQP_FLOOR_N="+strconv.Itoa(maxN))
	hub.Stderr = os.Stderr
	stdin, err := hub.StdinPipe()
	require.NoError(t, err)
	stdout, err := hub.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, hub.Start())
	t.Cleanup(func() {
		stdin.Close()
		_ = hub.Wait()
	})
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if sc.Text() == "FLOOR-HUB-READY" {
			ready = true
			break
		}
	}
	require.True(t, ready, "the hub child never became ready")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	var cases []floorCase
	for _, n := range ns {
		cases = append(cases,
			floorCase{Layout: "conn", N: n},
			floorCase{Layout: "a", N: n},
			floorCase{Layout: "a", N: n, Credit: 1, MaxLinks: 2},
			floorCase{Layout: "b", N: n},
			floorCase{Layout: "b", N: n, Credit: 1},
			floorCase{Layout: "sessions", N: n},
			floorCase{Layout: "rcv", N: n},
			floorCase{Layout: "snd", N: n},
		)
	}
	var results []floorResult
	for _, c := range cases {
		spec, err := json.Marshal(c)
		require.NoError(t, err)
		cmd := exec.Command(os.Args[0], "-test.run=^TestAMQPFloorClient$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), floorRoleEnv+"=client", floorDirEnv+"="+dir, floorCaseEnv+"="+string(spec))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "client child %s:\n%s", spec, out)
		var r floorResult
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			if js, ok := strings.CutPrefix(line, "FLOOR-RESULT "); ok {
				require.NoError(t, json.Unmarshal([]byte(js), &r))
				found = true
			}
		}
		require.True(t, found, "no result from client child %s:\n%s", spec, out)
		results = append(results, r)
		t.Logf("%s", floorLine(r))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| layout | N | credit | max-links | auth | heap B/dev | HeapInuse B/dev | RSS B/dev | stack B/dev | goroutines/dev | setup |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %.0f | %.0f | %.0f | %.0f | %.2f | %s |\n",
			r.Case.Layout, r.Case.N, r.Case.Credit, r.Case.MaxLinks, r.Auth,
			r.PerDevHeap, float64(r.HeapInuseDelta)/float64(r.Case.N), r.PerDevRSS, r.PerDevStack, r.PerDevGoroutine, r.Elapsed.Round(time.Millisecond))
	}
	t.Logf("\n%s", b.String())
}

func floorLine(r floorResult) string {
	return fmt.Sprintf("%-8s N=%-5d credit=%d maxlinks=%d auth=%s: heap %.0f B/dev, RSS %.0f B/dev, stack %.0f B/dev, %.2f goroutines/dev (before heap %d rss %d; after heap %d rss %d) in %s",
		r.Case.Layout, r.Case.N, r.Case.Credit, r.Case.MaxLinks, r.Auth, r.PerDevHeap, r.PerDevRSS, r.PerDevStack, r.PerDevGoroutine,
		r.Before.Heap, r.Before.RSS, r.After.Heap, r.After.RSS, r.Elapsed)
}

// TestAMQPFloorHub is the hub child of TestAMQPFloor; it serves until its
// standard input closes.
func TestAMQPFloorHub(t *testing.T) {
	if os.Getenv(floorRoleEnv) != "hub" {
		t.Skip("the hub child of TestAMQPFloor")
	}
	n, err := strconv.Atoi(os.Getenv("IOTHUB_AMQP_FLOOR_N"))
	require.NoError(t, err)
	e, err := engine.New(engine.Config{HostName: floorHost})
	require.NoError(t, err)
	defer e.Close()
	srv, err := amqpd.New(e, nil)
	require.NoError(t, err)
	defer srv.Close()
	info := floorHubInfo{}
	exp := time.Now().Add(24 * time.Hour)
	for i := range n {
		id := fmt.Sprintf("floor-%05d", i)
		d, herr := e.PutDevice(id, engine.Device{}, "")
		require.Nil(t, herr)
		tok, err := auth.SignSAS(auth.Identity{HostName: floorHost, DeviceID: id}.Resource(), "", *d.Authentication.SymmetricKey.PrimaryKey, exp)
		require.NoError(t, err)
		info.IDs = append(info.IDs, id)
		info.Tokens = append(info.Tokens, tok)
	}
	p, _ := e.Policy("iothubowner")
	info.Owner, err = auth.SignSAS(floorHost, p.Name, p.PrimaryKey, exp)
	require.NoError(t, err)

	cert, _ := pkitest.ServerCert(t)
	info.CA = cert.Certificate[len(cert.Certificate)-1]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	info.Addr = ln.Addr().String()
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(c, conf)
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				_ = srv.ServeConn(tc, amqpd.ConnInfo{Protocol: "amqp"})
			}()
		}
	}()
	js, err := json.Marshal(info)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(os.Getenv(floorDirEnv), "hub.json"), js, 0o600))
	fmt.Println("FLOOR-HUB-READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	ln.Close()
	e.Close()
	srv.Close()
	wg.Wait()
}

// TestAMQPFloorClient is a client child of TestAMQPFloor. Layouts, all on
// one connection with one $cbs link pair on its own session:
//
//	conn      nothing per device (the connection's own cost, as a check)
//	a         a session per device, its two method links (sender then
//	          receiver, as transport/amqp attaches them) and its own
//	          put-token (Java/.NET layout)
//	b         one shared session, two method links per device (C layout)
//	sessions  a session per device, no links
//	rcv       one shared session, one method receiver per device
//	snd       one shared session, one method sender per device
//
// Layout a uses a put-token per device while N fits the hub's 1,000
// tokens per connection, as IoT Hub does; past that, and in every other
// layout, one iothubowner token for the hub audience authorizes every
// device's links (.NET's grouped SAS).
func TestAMQPFloorClient(t *testing.T) {
	if os.Getenv(floorRoleEnv) != "client" {
		t.Skip("a client child of TestAMQPFloor")
	}
	var c floorCase
	require.NoError(t, json.Unmarshal([]byte(os.Getenv(floorCaseEnv)), &c))
	js, err := os.ReadFile(filepath.Join(os.Getenv(floorDirEnv), "hub.json"))
	require.NoError(t, err)
	var info floorHubInfo
	require.NoError(t, json.Unmarshal(js, &info))
	require.LessOrEqual(t, c.N, len(info.IDs))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ca, err := x509.ParseCertificate(info.CA)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	nc, err := tls.Dial("tcp", info.Addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	conn, err := amqp.NewConn(ctx, nc, &amqp.ConnOptions{HostName: "localhost", MaxSessions: 65535})
	require.NoError(t, err)
	defer conn.Close()
	cbsSess, err := conn.NewSession(ctx, nil)
	require.NoError(t, err)
	cs, err := cbsSess.NewSender(ctx, "$cbs", &amqp.SenderOptions{Name: "cbs-sender"})
	require.NoError(t, err)
	cr, err := cbsSess.NewReceiver(ctx, "$cbs", &amqp.ReceiverOptions{Name: "cbs-receiver", Credit: 10, TargetAddress: "cbs"})
	require.NoError(t, err)
	var cbsMu sync.Mutex
	putToken := func(audience, tok string) error {
		cbsMu.Lock()
		defer cbsMu.Unlock()
		to, replyTo := "$cbs", "cbs"
		if err := cs.Send(ctx, &amqp.Message{
			Properties: &amqp.MessageProperties{MessageID: audience, To: &to, ReplyTo: &replyTo},
			ApplicationProperties: map[string]any{
				"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience,
			},
			Value: tok,
		}, nil); err != nil {
			return err
		}
		m, err := cr.Receive(ctx, nil)
		if err != nil {
			return err
		}
		if err := cr.AcceptMessage(ctx, m); err != nil {
			return err
		}
		if st, _ := m.ApplicationProperties["status-code"].(int32); st != 200 {
			return fmt.Errorf("iothub: put-token %s: %v %v", audience, st, m.ApplicationProperties["status-description"])
		}
		return nil
	}
	perDevice := c.Layout == "a" && c.N <= 1000
	res := floorResult{Case: c, Auth: "hub"}
	if perDevice {
		res.Auth = "device"
	} else {
		require.NoError(t, putToken(floorHost, info.Owner))
	}
	var shared *amqp.Session
	if c.Layout == "b" || c.Layout == "rcv" || c.Layout == "snd" {
		shared, err = conn.NewSession(ctx, nil)
		require.NoError(t, err)
	}

	res.Before = sampleMem()
	var heapBefore, heapAfter uint64
	heapBefore = heapInuse()
	start := time.Now()

	keep := make([]any, 0, 3*c.N) // everything a device holds stays reachable
	var keepMu sync.Mutex
	first := amqp.ReceiverSettleModeFirst
	one := func(i int) error {
		id := info.IDs[i]
		addr := "/devices/" + id + "/methods/devicebound"
		props := map[string]any{
			"com.microsoft:api-version":            "2021-04-12",
			"com.microsoft:channel-correlation-id": "methods:" + id,
		}
		if perDevice {
			if err := putToken(floorHost+"/devices/"+id, info.Tokens[i]); err != nil {
				return err
			}
		}
		var held []any
		s := shared
		switch c.Layout {
		case "conn":
			return nil
		case "a", "sessions":
			var so *amqp.SessionOptions
			if c.MaxLinks != 0 {
				so = &amqp.SessionOptions{MaxLinks: c.MaxLinks}
			}
			ns, err := conn.NewSession(ctx, so)
			if err != nil {
				return err
			}
			s = ns
			held = append(held, ns)
		}
		if c.Layout == "a" || c.Layout == "b" || c.Layout == "snd" {
			snd, err := s.NewSender(ctx, addr, &amqp.SenderOptions{Name: "snd-" + id, Properties: props, RequestedReceiverSettleMode: &first})
			if err != nil {
				return err
			}
			held = append(held, snd)
		}
		if c.Layout == "a" || c.Layout == "b" || c.Layout == "rcv" {
			credit := c.Credit
			if credit == 0 {
				credit = 50 // as transport/amqp
			}
			rcv, err := s.NewReceiver(ctx, addr, &amqp.ReceiverOptions{Name: "rcv-" + id, Properties: props, Credit: credit, SettlementMode: &first})
			if err != nil {
				return err
			}
			held = append(held, rcv)
		}
		keepMu.Lock()
		keep = append(keep, held...)
		keepMu.Unlock()
		return nil
	}
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := one(i); err != nil {
					errs <- fmt.Errorf("iothub: device %d: %w", i, err)
					return
				}
			}
		}()
	}
feed:
	for i := range c.N {
		select {
		case next <- i:
		case err := <-errs:
			require.NoError(t, err)
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		require.NoError(t, err)
	default:
	}
	res.Elapsed = time.Since(start)
	res.After = sampleMem()
	heapAfter = heapInuse()
	res.HeapInuseDelta = int64(heapAfter) - int64(heapBefore)
	n := float64(c.N)
	res.PerDevHeap = float64(res.After.Heap-res.Before.Heap) / n
	res.PerDevRSS = float64(res.After.RSS-res.Before.RSS) / n
	res.PerDevStack = float64(res.After.Stack-res.Before.Stack) / n
	res.PerDevGoroutine = float64(res.After.Goroutines-res.Before.Goroutines) / n
	require.Len(t, keep, cap(keep)-func() int {
		switch c.Layout {
		case "a":
			return 0
		case "b":
			return c.N
		case "conn":
			return 3 * c.N
		default:
			return 2 * c.N
		}
	}())
	out, err := json.Marshal(res)
	require.NoError(t, err)
	fmt.Printf("FLOOR-RESULT %s\n", out)
}

// heapInuse reads HeapInuse (after sampleMem's collections).
func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
