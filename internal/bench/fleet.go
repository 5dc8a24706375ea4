package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	goamqp "github.com/Azure/go-amqp"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/transports"
	"github.com/iothub-go/iothub/transport"
)

// rawImpl is the floor implementation for a transport: the raw paho
// responder for MQTT, the raw go-amqp one for AMQP over TLS, "" otherwise.
func rawImpl(transport string) string {
	switch transport {
	case "mqtt", "mqtt-ws":
		return ImplPahoRaw
	case "amqp":
		return ImplAMQPRaw
	}
	return ""
}

// handoffImpl is the handoff floor for a transport (ImplPahoHandoff,
// ImplAMQPHandoff), "" when it has none.
func handoffImpl(transport string) string {
	switch transport {
	case "mqtt", "mqtt-ws":
		return ImplPahoHandoff
	case "amqp":
		return ImplAMQPHandoff
	}
	return ""
}

// Device implementations a fleet can run.
const (
	ImplGoSDK   = "go-sdk"   // this SDK's device.Client
	ImplPahoRaw = "paho-raw" // a minimal responder written directly on paho: the floor
	ImplAMQPRaw = "amqp-raw" // a minimal responder written directly on go-amqp: the AMQP floor
	// The raw responders with the one thing every conforming device client
	// must add: each answer leaves the library's delivery goroutine, on a
	// goroutine of its own, so that a slow handler cannot make the client
	// deaf. Nothing else: no handler table, no validation, no bookkeeping,
	// and the same PUBLISH or Send as the raw responder.
	ImplPahoHandoff = "paho-handoff"
	ImplAMQPHandoff = "amqp-handoff"
	ImplNodeSDK     = "node-sdk" // the official azure-iot-device (conformance/bench_device.js)
)

// FleetSpec describes a population of device clients that answer the
// method Method with status 200 and the request payload. It is the first
// line a fleet process reads on stdin (JSON).
type FleetSpec struct {
	Impl        string   `json:"impl"`
	Transport   string   `json:"transport"`
	CAPEM       string   `json:"ca_pem"`
	ConnStrings []string `json:"conn_strings"`
	Method      string   `json:"method"`
	// ConnectConcurrency bounds how many devices connect at once.
	ConnectConcurrency int `json:"connect_concurrency"`
	// ConnectTimeoutMs bounds each device's connect.
	ConnectTimeoutMs int `json:"connect_timeout_ms"`
	// CPUProfile, if set, is where a Go fleet process writes its CPU
	// profile (from connected to closed).
	CPUProfile string `json:"cpu_profile,omitempty"`
	// MemProfile, if set, is where a Go fleet process writes a heap
	// profile each time it samples its memory: once connected, and on
	// "stats".
	MemProfile string `json:"mem_profile,omitempty"`
	// ServerCertPEM and ServerKeyPEM are the answering server's
	// certificate chain and key (ImplAnswer only).
	ServerCertPEM string `json:"server_cert_pem,omitempty"`
	ServerKeyPEM  string `json:"server_key_pem,omitempty"`
	// PoolPerConn and PoolDialRate configure the amqp.Pool of an
	// ImplGoPool fleet (PoolPerConn also the ImplAMQPRawPool layout); 0
	// takes the pool's defaults. Proxy puts a fault proxy between the
	// pool and the hub, which the "cut" command cuts.
	PoolPerConn  int     `json:"pool_per_conn,omitempty"`
	PoolDialRate float64 `json:"pool_dial_rate,omitempty"`
	Proxy        bool    `json:"proxy,omitempty"`
}

// Mem is a memory sample of one process.
type Mem struct {
	// RSS is VmRSS (Go) or process.memoryUsage().rss (Node).
	RSS int64 `json:"rss_bytes"`
	// Heap is the live heap after a GC: HeapAlloc (Go) or heapUsed +
	// external (Node).
	Heap int64 `json:"heap_bytes"`
	// Stack is the goroutine stacks in use (Go only).
	Stack      int64 `json:"stack_bytes"`
	Goroutines int   `json:"goroutines,omitempty"`
}

// fleetMsg is a line a fleet process writes on stdout (JSON).
type fleetMsg struct {
	Type           string  `json:"type"` // "connected", "stats", "closed", "twin_window_start", "twin_result"
	Connected      int     `json:"connected"`
	Failed         int     `json:"failed"`
	FirstError     string  `json:"first_error,omitempty"`
	ConnectSeconds float64 `json:"connect_seconds"`
	ConnectP50Ms   float64 `json:"connect_p50_ms"`
	ConnectP99Ms   float64 `json:"connect_p99_ms"`
	Before         *Mem    `json:"before,omitempty"`
	After          *Mem    `json:"after,omitempty"`
	CPUSeconds     float64 `json:"cpu_seconds"`
	Mem            *Mem    `json:"mem,omitempty"`
	// Addr is the answering server's address (ImplAnswer only).
	Addr string `json:"addr,omitempty"`
	// The twin phase's outcome ("twin_result"; see TwinSpec): the
	// updates that succeeded in the measured window, the ones that
	// failed, the window's length, each update's round trip in
	// microseconds, and (in CPUSeconds) the process's CPU time in the
	// window.
	Updates   int       `json:"updates,omitempty"`
	Errors    int       `json:"errors,omitempty"`
	Seconds   float64   `json:"seconds,omitempty"`
	Latencies []float64 `json:"latencies_us,omitempty"`
	// The "recovered" answer to "cut" (a multiplexed fleet).
	CutConns        int     `json:"cut_conns,omitempty"`
	RecoverySeconds float64 `json:"recovery_seconds,omitempty"`
	Dials           int64   `json:"dials,omitempty"`
	PeakDialRate    int64   `json:"peak_dial_rate,omitempty"`
	Conns           int     `json:"conns,omitempty"`
	PeakRSS         int64   `json:"peak_rss_bytes,omitempty"`
	// The collector's counters ("gc", and "recovered" for the recovery):
	// completed collections and the CPU time they took.
	GCCycles     uint64  `json:"gc_cycles,omitempty"`
	GCCPUSeconds float64 `json:"gc_cpu_seconds,omitempty"`
}

// goFleet is a population of Go device clients in this process.
type goFleet struct {
	sdk     []*device.Client
	paho    []paho.Client
	amqp    []*rawAMQP
	closers []func()
	mux     *muxState // the pool of a multiplexed fleet
	// twinUpd is the first device's reported-property update, once a
	// twin phase asked for it; twinSteps counts the paired updates.
	twinUpd   twinUpdate
	twinSteps int
}

func clientTLS(caPEM string) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, errors.New("bench: the fleet spec holds no CA certificate")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// sdkTransport returns this SDK's transport for a transport name.
func sdkTransport(name string) (transport.Transport, error) {
	tr, err := transports.ByName(name)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return tr, nil
}

// echoHandler answers with status 200 and the request payload, verbatim.
func echoHandler(_ context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
	return &device.MethodResponse{Status: 200, Payload: req.Payload}, nil
}

// startGoFleet connects every device of spec and returns the fleet (with
// the devices that connected) and the "connected" report. Memory samples
// are of the whole process.
func startGoFleet(ctx context.Context, spec FleetSpec) (*goFleet, fleetMsg) {
	if spec.Impl == ImplAnswer {
		return startAnswer(spec)
	}
	msg := fleetMsg{Type: "connected"}
	fail := func(err error) (*goFleet, fleetMsg) {
		msg.Failed = len(spec.ConnStrings)
		msg.FirstError = err.Error()
		return &goFleet{}, msg
	}
	tlsConf, err := clientTLS(spec.CAPEM)
	if err != nil {
		return fail(err)
	}
	var connect func(ctx context.Context, cs string) (func(*goFleet), error)
	var mux *muxState
	switch spec.Impl {
	case ImplGoPool:
		if spec.Transport != "amqp" {
			return fail(fmt.Errorf("bench: %s speaks amqp only", ImplGoPool))
		}
		mux, connect, err = poolConnect(spec, tlsConf)
		if err != nil {
			return fail(err)
		}
	case ImplAMQPRawPool:
		if spec.Transport != "amqp" {
			return fail(fmt.Errorf("bench: %s speaks amqp only", ImplAMQPRawPool))
		}
		mux, connect = rawPoolConnect(spec, tlsConf)
	case ImplGoSDK:
		tr, err := sdkTransport(spec.Transport)
		if err != nil {
			return fail(err)
		}
		connect = func(ctx context.Context, cs string) (func(*goFleet), error) {
			c, err := device.NewClientFromConnectionString(cs, &device.ClientOptions{
				Transport: tr,
				TLSConfig: tlsConf,
				Retry:     iothub.RetryOptions{RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
			})
			if err != nil {
				return nil, err
			}
			if err := c.SetMethodHandler(spec.Method, echoHandler); err != nil {
				return nil, err
			}
			if err := c.Connect(ctx); err != nil {
				c.Close(context.Background())
				return nil, err
			}
			return func(f *goFleet) { f.sdk = append(f.sdk, c) }, nil
		}
	case ImplPahoRaw, ImplPahoHandoff:
		if spec.Transport != "mqtt" && spec.Transport != "mqtt-ws" {
			return fail(fmt.Errorf("bench: %s speaks mqtt and mqtt-ws only", spec.Impl))
		}
		connect = func(ctx context.Context, cs string) (func(*goFleet), error) {
			c, err := dialRawPaho(ctx, cs, spec.Transport == "mqtt-ws", spec.Impl == ImplPahoHandoff, tlsConf)
			if err != nil {
				return nil, err
			}
			return func(f *goFleet) { f.paho = append(f.paho, c) }, nil
		}
	case ImplAMQPRaw, ImplAMQPHandoff:
		if spec.Transport != "amqp" {
			return fail(fmt.Errorf("bench: %s speaks amqp only", spec.Impl))
		}
		connect = func(ctx context.Context, cs string) (func(*goFleet), error) {
			c, err := dialRawAMQP(ctx, cs, spec.Impl == ImplAMQPHandoff, tlsConf)
			if err != nil {
				return nil, err
			}
			return func(f *goFleet) { f.amqp = append(f.amqp, c) }, nil
		}
	default:
		return fail(fmt.Errorf("bench: impl %q does not run in a Go process", spec.Impl))
	}

	before := sampleMem()
	msg.Before = &before
	conc := max(spec.ConnectConcurrency, 1)
	timeout := time.Duration(spec.ConnectTimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Minute
	}
	f := &goFleet{mux: mux}
	var mu sync.Mutex
	durs := make([]time.Duration, 0, len(spec.ConnStrings))
	next := make(chan string)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for cs := range next {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				t0 := time.Now()
				add, err := connect(cctx, cs)
				d := time.Since(t0)
				cancel()
				mu.Lock()
				if err != nil {
					msg.Failed++
					if msg.FirstError == "" {
						msg.FirstError = err.Error()
					}
				} else {
					add(f)
					msg.Connected++
					durs = append(durs, d)
				}
				mu.Unlock()
			}
		})
	}
	for _, cs := range spec.ConnStrings {
		next <- cs
	}
	close(next)
	wg.Wait()
	msg.ConnectSeconds = time.Since(start).Seconds()
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	msg.ConnectP50Ms = ms(percentile(durs, 0.50))
	msg.ConnectP99Ms = ms(percentile(durs, 0.99))
	after := sampleMem()
	msg.After = &after
	if spec.MemProfile != "" {
		writeHeapProfile(spec.MemProfile, msg.Connected)
	}
	return f, msg
}

// close disconnects every device, a few at a time.
func (f *goFleet) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range f.sdk {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = c.Close(ctx)
		})
	}
	for _, c := range f.paho {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.Disconnect(50)
		})
	}
	wg.Wait()
	for _, c := range f.amqp {
		c.close()
	}
	for _, c := range f.closers {
		c()
	}
	f.mux.close()
	f.sdk, f.paho, f.amqp, f.closers, f.mux = nil, nil, nil, nil, nil
}

// rawConn is what a raw responder needs to connect: its connection
// string, a SAS token, and a TLS configuration for the hub's host.
type rawConn struct {
	cs    auth.ConnectionString
	token auth.Token
	tls   *tls.Config
}

func rawConnect(ctx context.Context, connStr, impl string, tlsConf *tls.Config) (*rawConn, error) {
	cs, err := auth.ParseDeviceConnectionString(connStr)
	if err != nil {
		return nil, err
	}
	tp, err := cs.TokenProvider(nil)
	if err != nil {
		return nil, err
	}
	tok, err := tp.Token(ctx)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(cs.Address())
	if err != nil {
		return nil, fmt.Errorf("bench: %s needs GatewayHostName=host:port: %w", impl, err)
	}
	conf := tlsConf.Clone()
	conf.ServerName = host
	return &rawConn{cs: cs, token: tok, tls: conf}, nil
}

// dialRawPaho connects the floor: a paho client that subscribes to
// methods and answers each request from paho's callback with one PUBLISH
// of the request payload, status 200. Nothing else: no handler dispatch,
// no validation, no reconnects. With handoff it is the handoff floor
// (ImplPahoHandoff).
func dialRawPaho(ctx context.Context, connStr string, ws, handoff bool, tlsConf *tls.Config) (paho.Client, error) {
	rc, err := rawConnect(ctx, connStr, ImplPahoRaw, tlsConf)
	if err != nil {
		return nil, err
	}
	cs, tok, conf := rc.cs, rc.token, rc.tls
	host, port, _ := net.SplitHostPort(cs.Address())
	broker := "tls://" + net.JoinHostPort(host, port)
	if ws {
		broker = "wss://" + net.JoinHostPort(host, port) + "/$iothub/websocket"
	}
	id := cs.Identity()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id.String()).
		SetUsername(id.HostName + "/" + id.String() + "/?api-version=2021-04-12").SetPassword(tok.Value).
		SetTLSConfig(conf).SetProtocolVersion(4).SetCleanSession(false).
		SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(120 * time.Second).
		SetConnectTimeout(30 * time.Second)
	c := paho.NewClient(o)
	if err := waitToken(ctx, c.Connect()); err != nil {
		c.Disconnect(0)
		return nil, err
	}
	answer := func(c paho.Client, m paho.Message) {
		topic := m.Topic()
		i := strings.Index(topic, "?$rid=")
		if i < 0 {
			return
		}
		c.Publish("$iothub/methods/res/200/?$rid="+topic[i+6:], 0, false, m.Payload())
	}
	if handoff {
		raw := answer
		answer = func(c paho.Client, m paho.Message) { go raw(c, m) }
	}
	st := c.Subscribe("$iothub/methods/POST/#", 0, answer)
	if err := waitToken(ctx, st); err != nil {
		c.Disconnect(0)
		return nil, err
	}
	return c, nil
}

func waitToken(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sampleMem returns this process's memory after two GCs.
func sampleMem() Mem {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return Mem{RSS: rss(), Heap: int64(m.HeapAlloc), Stack: int64(m.StackInuse), Goroutines: runtime.NumGoroutine()}
}

// dialRawAMQP connects the AMQP floor: go-amqp used directly, as IoT Hub
// expects it (TLS, no SASL, a CBS put-token, the two method links,
// pre-settled as the SDK's), with
// one goroutine that accepts each request and sends back its payload with
// status 200. Nothing else: no handler dispatch, no validation, no
// reconnects, no token renewal.
func dialRawAMQP(ctx context.Context, connStr string, handoff bool, tlsConf *tls.Config) (*rawAMQP, error) {
	rc, err := rawConnect(ctx, connStr, ImplAMQPRaw, tlsConf)
	if err != nil {
		return nil, err
	}
	cs, tok, conf := rc.cs, rc.token, rc.tls
	nc, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", cs.Address())
	if err != nil {
		return nil, err
	}
	id := cs.Identity()
	ac, err := goamqp.NewConn(ctx, nc, &goamqp.ConnOptions{HostName: id.HostName})
	if err != nil {
		nc.Close()
		return nil, err
	}
	fail := func(err error) (*rawAMQP, error) {
		ac.Close()
		return nil, err
	}
	s, err := ac.NewSession(ctx, nil)
	if err != nil {
		return fail(err)
	}
	cbsOut, err := s.NewSender(ctx, "$cbs", nil)
	if err != nil {
		return fail(err)
	}
	cbsIn, err := s.NewReceiver(ctx, "$cbs", &goamqp.ReceiverOptions{Credit: 1})
	if err != nil {
		return fail(err)
	}
	to, reply := "$cbs", "cbs"
	put := &goamqp.Message{
		Properties: &goamqp.MessageProperties{MessageID: "put-1", To: &to, ReplyTo: &reply},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken",
			"name": id.HostName + "/devices/" + id.DeviceID},
		Value: tok.Value,
	}
	if err := cbsOut.Send(ctx, put, nil); err != nil {
		return fail(err)
	}
	res, err := cbsIn.Receive(ctx, nil)
	if err != nil {
		return fail(err)
	}
	if code := fmt.Sprint(res.ApplicationProperties["status-code"]); code != "200" && code != "202" {
		return fail(fmt.Errorf("bench: put-token: status %s", code))
	}
	done, err := rawMethodLinks(ctx, s, id, handoff)
	if err != nil {
		return fail(err)
	}
	return &rawAMQP{conn: ac, sess: s, id: id, done: done}, nil
}

// rawMethodLinks attaches id's two method links on session s and starts
// the goroutine that answers each request with its payload and status 200;
// done is closed when it ends (with the links).
func rawMethodLinks(ctx context.Context, s *goamqp.Session, id auth.Identity, handoff bool) (chan struct{}, error) {
	addr := "amqps://" + id.HostName + "/devices/" + id.DeviceID + "/methods/devicebound"
	props := map[string]any{"com.microsoft:api-version": "2021-04-12", "com.microsoft:channel-correlation-id": "methods:" + id.DeviceID}
	// The SDK's settle modes (the .NET SDK's): pre-settled both ways.
	settled, first := goamqp.SenderSettleModeSettled, goamqp.ReceiverSettleModeFirst
	out, err := s.NewSender(ctx, addr, &goamqp.SenderOptions{Name: "res-" + id.DeviceID, Properties: props,
		SettlementMode: &settled, RequestedReceiverSettleMode: &first})
	if err != nil {
		return nil, err
	}
	in, err := s.NewReceiver(ctx, addr, &goamqp.ReceiverOptions{Name: "req-" + id.DeviceID, Properties: props, Credit: 50,
		SettlementMode: &first, RequestedSenderSettleMode: &settled})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rctx := context.Background()
		for {
			m, err := in.Receive(rctx, nil)
			if err != nil {
				return
			}
			_ = in.AcceptMessage(rctx, m)
			if m.Properties == nil {
				continue
			}
			resp := &goamqp.Message{
				Properties:            &goamqp.MessageProperties{CorrelationID: m.Properties.CorrelationID},
				ApplicationProperties: map[string]any{"IoThub-status": int32(200)},
				Data:                  m.Data,
			}
			if handoff { // ImplAMQPHandoff: go-amqp's Send watches the link itself
				go func() { _ = out.Send(rctx, resp, nil) }()
				continue
			}
			if err := out.Send(rctx, resp, nil); err != nil {
				return
			}
		}
	}()
	return done, nil
}

// rawAMQP is one connection of the AMQP floor.
type rawAMQP struct {
	conn *goamqp.Conn
	sess *goamqp.Session
	id   auth.Identity
	done chan struct{} // closed when the method responder ends
}

func (c *rawAMQP) close() {
	c.conn.Close()
	<-c.done
}

// RawAMQPResponder connects one device of the AMQP floor (amqp-raw; with
// handoff, amqp-handoff) with connStr, for the in-process benchmarks of
// other packages (device's BenchmarkMethodRoundTrip). The device answers
// every method call with its payload until closed.
func RawAMQPResponder(ctx context.Context, connStr string, handoff bool, tlsConf *tls.Config) (closeFn func(), err error) {
	c, err := dialRawAMQP(ctx, connStr, handoff, tlsConf)
	if err != nil {
		return nil, err
	}
	return c.close, nil
}
