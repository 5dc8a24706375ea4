package bench

// The cloud-to-device benchmark ("iothub bench --c2d"): messages per second
// end to end, from the first send to the last completion, with a device
// completing each message. The hub and the sender (this SDK's
// service.Client.Send over AMQP, C2DConfig.Concurrency sends in flight) run in
// this process; the device runs in a child process of its own: this SDK's
// device.Client ("iothub bench --c2d-device", RunC2DDevice) or, with
// Node, the official azure-iot-device (conformance/bench_c2d_device.js).
//
// The device protocol: the parent writes a FleetSpec (one connection
// string) as one JSON line on the device's stdin; the device connects with
// a message handler in place and writes a "connected" fleetMsg. For every
// message it writes {"type":"c2d","lat_us":x} (x: its receive time minus
// the send time in the message's property "sent", unix nanoseconds) and
// completes the message. "stats" and "close" work as in the fleet
// protocol.
//
// The hub queues at most 50 messages per device; the sender keeps the
// messages sent and not yet received by the device under Window, and a
// send the hub refuses as queue-full (messages received but not yet
// settled fill the queue) is retried a millisecond later.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/service"
)

// C2DConfig configures RunC2D. Zero fields take C2DDefaults' values.
type C2DConfig struct {
	// Messages is how many messages each row sends, after Warmup ones.
	Messages int
	Warmup   int
	// Transports are the devices' transports (mqtt, amqp, …).
	Transports []string
	// Concurrency is the sends in flight; Window bounds the messages sent
	// and not yet received by the device (the hub holds 50 per device).
	Concurrency int
	Window      int
	// Rounds repeats the rows (interleaved) and reports medians.
	Rounds int
	// Node adds the official Node device (NodeDir holds
	// bench_c2d_device.js and node_modules; NodeBin is node).
	Node    bool
	NodeDir string
	NodeBin string
	// InProcess runs the Go device in this process (its CPU is then the
	// hub's); otherwise DeviceCommand starts it (e.g. {"/path/iothub",
	// "bench", "--c2d-device"}).
	InProcess     bool
	DeviceCommand []string
	// Progress receives progress lines; nil: none.
	Progress io.Writer
}

// C2DDefaults returns the default benchmark: 5,000 messages after 500,
// over mqtt and amqp, 8 sends in flight, at most 40 outstanding.
func C2DDefaults() C2DConfig {
	return C2DConfig{Messages: 5000, Warmup: 500, Transports: []string{"mqtt", "amqp"}, Concurrency: 8, Window: 40,
		Rounds: 1, NodeBin: "node"}
}

func (c *C2DConfig) fill() {
	d := C2DDefaults()
	if c.Messages == 0 {
		c.Messages = d.Messages
	}
	if c.Warmup == 0 {
		c.Warmup = d.Warmup
	}
	if len(c.Transports) == 0 {
		c.Transports = d.Transports
	}
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Rounds == 0 {
		c.Rounds = d.Rounds
	}
	if c.NodeBin == "" {
		c.NodeBin = d.NodeBin
	}
}

// Validate reports a configuration RunC2D refuses (after defaults).
func (c C2DConfig) Validate() error {
	c.fill()
	if c.Messages < 1 || c.Warmup < 0 || c.Rounds < 1 || c.Concurrency < 1 {
		return errors.New("bench: the c2d benchmark needs positive Messages, Rounds and Concurrency, and Warmup ≥ 0")
	}
	if c.Window < 1 || c.Window > 50 {
		return errors.New("bench: the c2d window must be 1 to 50 (the hub queues 50 messages per device)")
	}
	for _, t := range c.Transports {
		if _, err := sdkTransport(t); err != nil {
			return err
		}
	}
	if !c.InProcess && len(c.DeviceCommand) == 0 {
		return errors.New("bench: DeviceCommand is required unless InProcess")
	}
	return nil
}

// C2DRow is one device implementation on one transport.
type C2DRow struct {
	Name      string `json:"name"` // impl/transport
	Impl      string `json:"impl"`
	Transport string `json:"transport"`
	Status    string `json:"status"` // ok, skipped, failed
	Reason    string `json:"reason,omitempty"`
	// Messages is the messages the device received in the measured window;
	// QueueFull the sends the hub refused as queue-full (retried).
	Messages  int `json:"messages"`
	QueueFull int `json:"queue_full_retries"`
	// Seconds is from the first send to the last completion (the hub's
	// queue empty); MsgsPerSec is Messages over it.
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// Latency is send to the device's handler (the device's clock minus
	// the send time carried in the message).
	Latency *Latency `json:"latency,omitempty"`
	// CPU per message in microseconds: this process (hub and sender), the
	// device's process, their sum.
	HubCPUPerMsg    float64  `json:"hub_cpu_us_per_msg"`
	DeviceCPUPerMsg float64  `json:"device_cpu_us_per_msg"`
	TotalCPUPerMsg  float64  `json:"total_cpu_us_per_msg"`
	InProcess       bool     `json:"in_process,omitempty"`
	Rounds          []C2DRow `json:"rounds,omitempty"`
}

// C2DRatio compares the Go device with the Node one on a transport: A ÷ B.
type C2DRatio struct {
	A              string  `json:"a"`
	B              string  `json:"b"`
	MsgsPerSec     float64 `json:"msgs_per_sec_ratio"`
	P50Ratio       float64 `json:"p50_ratio"`
	P90Ratio       float64 `json:"p90_ratio"`
	DeviceCPURatio float64 `json:"device_cpu_ratio"`
	TotalCPURatio  float64 `json:"total_cpu_ratio"`
}

// C2DResult is the outcome of RunC2D.
type C2DResult struct {
	Schema      string     `json:"schema"`
	Started     string     `json:"started"`
	Seconds     float64    `json:"seconds"`
	Machine     Machine    `json:"machine"`
	Messages    int        `json:"messages"`
	Warmup      int        `json:"warmup"`
	Concurrency int        `json:"concurrency"`
	Window      int        `json:"window"`
	Rounds      int        `json:"rounds"`
	Rows        []C2DRow   `json:"rows"`
	Ratios      []C2DRatio `json:"ratios"`
	Notes       []string   `json:"notes"`
}

// c2dSentProp is the application property carrying the send time (unix
// nanoseconds).
const c2dSentProp = "sent"

// c2dRetryDelay is the pause before resending a message the hub refused
// as queue-full.
const c2dRetryDelay = time.Millisecond

// c2dMsg is a line of a c2d device (fleetMsg's fields it needs, plus the
// per-message latency).
type c2dMsg struct {
	Type       string  `json:"type"`
	LatUs      float64 `json:"lat_us"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// c2dPeer is the parent's handle on a c2d device.
type c2dPeer struct {
	lines  <-chan []byte
	write  func(string) error
	closer func() error
	stderr func() string
	inProc bool
}

// RunC2D runs the cloud-to-device benchmark. On interruption it returns
// what it measured with ctx's error.
func RunC2D(ctx context.Context, cfg C2DConfig) (*C2DResult, error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	res := &C2DResult{Schema: "iothub-bench-c2d/1", Started: start.UTC().Format(time.RFC3339), Machine: machine(Config{Node: cfg.Node, NodeBin: cfg.NodeBin}),
		Messages: cfg.Messages, Warmup: cfg.Warmup, Concurrency: cfg.Concurrency, Window: cfg.Window, Rounds: cfg.Rounds}
	defer func() {
		res.Seconds = round(time.Since(start).Seconds(), 1)
		res.Machine.LoadAfter = loadAvg()
	}()
	// The hub on a random port only: the Node device dials localhost:<port>.
	r := &runner{ctx: ctx, res: &Result{}, cfg: Config{HubAddrs: []string{"127.0.0.1:0"}, Node: cfg.Node, NodeBin: cfg.NodeBin,
		NodeDir: cfg.NodeDir, InProcess: cfg.InProcess, Progress: cfg.Progress}}
	if err := r.startHub(); err != nil {
		return nil, err
	}
	defer r.h.Close()
	if r.caFile != "" {
		defer os.Remove(r.caFile)
	}
	svc, err := service.NewClientFromConnectionString(r.serviceCS, &service.ClientOptions{TLSConfig: r.tlsConf})
	if err != nil {
		return nil, err
	}
	defer svc.Close(context.Background())

	var plan []rowSpec
	for _, t := range cfg.Transports {
		plan = append(plan, rowSpec{ImplGoSDK, t})
		if cfg.Node {
			plan = append(plan, rowSpec{ImplNodeSDK, t})
		}
	}
	rounds := make([][]C2DRow, len(plan))
	for k := range cfg.Rounds {
		for j := range plan {
			if ctx.Err() != nil {
				break
			}
			i := (j + k) % len(plan)
			row := r.c2dRow(cfg, svc, plan[i])
			rounds[i] = append(rounds[i], row)
		}
	}
	for _, rr := range rounds {
		if len(rr) > 0 {
			res.Rows = append(res.Rows, medianC2DRow(rr))
		}
	}
	res.Ratios = c2dRatios(res.Rows)
	res.Notes = append(res.Notes,
		fmt.Sprintf("sender: service.Client.Send (AMQP, one connection), %d sends in flight, at most %d messages sent and not yet received by the device (the hub queues 50 per device); no feedback requested (ack none)", cfg.Concurrency, cfg.Window),
		"latency: send (just before Send) to the device's handler, by the same machine's clock; the device writes one JSON line per message on stdout, in its CPU",
		"Go device: device.Client.SetMessageHandler returning Complete; Node device: client.on('message') then client.complete (MQTT: PUBACK; AMQP: accepted)")
	return res, ctx.Err()
}

// startC2DPeer starts the device of rs for the device identity cred.
func (r *runner) startC2DPeer(cfg C2DConfig, rs rowSpec, cred deviceCred) (*c2dPeer, error) {
	spec := FleetSpec{Impl: rs.impl, Transport: rs.transport, CAPEM: r.caPEM, ConnStrings: r.connStrings(rs.impl, rs.transport, []deviceCred{cred}),
		ConnectConcurrency: 1, ConnectTimeoutMs: 20000}
	var argv, env []string
	switch {
	case rs.impl == ImplNodeSDK:
		argv = []string{cfg.NodeBin, r.nodeScript("bench_c2d_device.js")}
		env = []string{"NODE_EXTRA_CA_CERTS=" + r.caFile}
	case cfg.InProcess:
		return startLocalC2DPeer(r.ctx, spec)
	default:
		argv = cfg.DeviceCommand
	}
	f, err := startProcFleet(r.ctx, argv, env, spec, time.Minute)
	if err != nil {
		return nil, err
	}
	p := f.(*procFleet)
	if rep := p.report(); rep.Connected != 1 {
		p.kill()
		return nil, fmt.Errorf("the device did not connect: %s", rep.FirstError)
	}
	return &c2dPeer{lines: p.lines, write: func(s string) error { _, err := io.WriteString(p.stdin, s+"\n"); return err },
		closer: p.close, stderr: p.stderr.String}, nil
}

// startLocalC2DPeer serves the device protocol in this process, on pipes.
func startLocalC2DPeer(ctx context.Context, spec FleetSpec) (*c2dPeer, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = RunC2DDevice(inR, outW)
		outW.Close()
		_, _ = io.Copy(io.Discard, inR)
	}()
	lines := make(chan []byte, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	p := &c2dPeer{lines: lines, inProc: true, stderr: func() string { return "" },
		write: func(s string) error { _, err := io.WriteString(inW, s+"\n"); return err }}
	p.closer = func() error {
		_ = p.write("close")
		inW.Close()
		for range lines {
			// drain until the device is gone
		}
		<-done
		return nil
	}
	b, err := json.Marshal(spec)
	if err == nil {
		err = p.write(string(b))
	}
	if err == nil {
		var m fleetMsg
		if m, err = p.readFleet(ctx, "connected", time.Minute); err == nil && m.Connected != 1 {
			err = fmt.Errorf("the device did not connect: %s", m.FirstError)
		}
	}
	if err != nil {
		p.closer()
		return nil, err
	}
	return p, nil
}

// readFleet returns the next line of type want.
func (p *c2dPeer) readFleet(ctx context.Context, want string, timeout time.Duration) (fleetMsg, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case b, ok := <-p.lines:
			if !ok {
				return fleetMsg{}, fmt.Errorf("bench: the c2d device ended before %q: %s", want, p.stderr())
			}
			var m fleetMsg
			if json.Unmarshal(b, &m) == nil && m.Type == want {
				return m, nil
			}
		case <-t.C:
			return fleetMsg{}, fmt.Errorf("bench: no %q from the c2d device within %v: %s", want, timeout, p.stderr())
		case <-ctx.Done():
			return fleetMsg{}, ctx.Err()
		}
	}
}

// deviceCPU asks the device for its CPU time so far.
func (p *c2dPeer) deviceCPU(ctx context.Context) (float64, error) {
	if err := p.write("stats"); err != nil {
		return 0, err
	}
	m, err := p.readFleet(ctx, "stats", time.Minute)
	return m.CPUSeconds, err
}

// c2dRow measures one implementation on one transport with a fresh device.
func (r *runner) c2dRow(cfg C2DConfig, svc *service.Client, rs rowSpec) C2DRow {
	row := C2DRow{Name: rs.impl + "/" + rs.transport, Impl: rs.impl, Transport: rs.transport, Status: "ok",
		InProcess: cfg.InProcess && rs.impl != ImplNodeSDK}
	fail := func(err error) C2DRow {
		row.Status, row.Reason = "failed", err.Error()
		r.logf("c2d %s: failed: %s", row.Name, row.Reason)
		return row
	}
	if rs.impl == ImplNodeSDK && cfg.NodeDir == "" {
		row.Status, row.Reason = "skipped", "no Node folder (--node-dir)"
		return row
	}
	r.rowSeq++
	creds, err := r.register(fmt.Sprintf("c%d", r.rowSeq), 1)
	if err != nil {
		return fail(err)
	}
	id := creds[0].id
	r.logf("c2d %s: connecting the device", row.Name)
	p, err := r.startC2DPeer(cfg, rs, creds[0])
	if err != nil {
		return fail(err)
	}
	defer p.closer()
	if cfg.Warmup > 0 {
		r.logf("c2d %s: %d warm-up messages", row.Name, cfg.Warmup)
		if _, err := r.c2dPhase(cfg, svc, p, id, cfg.Warmup); err != nil {
			return fail(fmt.Errorf("warm-up: %w", err))
		}
	}
	dev0, err := p.deviceCPU(r.ctx)
	if err != nil {
		return fail(err)
	}
	r.logf("c2d %s: %d messages, %d sends in flight", row.Name, cfg.Messages, cfg.Concurrency)
	ph, err := r.c2dPhase(cfg, svc, p, id, cfg.Messages)
	if err != nil {
		return fail(err)
	}
	dev1, err := p.deviceCPU(r.ctx)
	if err != nil {
		return fail(err)
	}
	n := float64(len(ph.lat))
	row.Messages, row.QueueFull = len(ph.lat), ph.queueFull
	row.Seconds = round(ph.seconds, 3)
	row.Latency = summarize(ph.lat, 0, "")
	if ph.seconds > 0 {
		row.MsgsPerSec = round(n/ph.seconds, 1)
	}
	if n > 0 {
		devCPU := dev1 - dev0
		if p.inProc {
			devCPU = 0 // in the hub's
		}
		row.HubCPUPerMsg = round(ph.cpu*1e6/n, 1)
		row.DeviceCPUPerMsg = round(devCPU*1e6/n, 1)
		row.TotalCPUPerMsg = round((ph.cpu+devCPU)*1e6/n, 1)
	}
	r.logf("c2d %s: %.0f msgs/s, p50 %.0f µs, device CPU %.0f µs/msg", row.Name, row.MsgsPerSec, row.Latency.P50, row.DeviceCPUPerMsg)
	return row
}

type c2dPhaseResult struct {
	lat       []time.Duration
	seconds   float64
	cpu       float64
	queueFull int
}

// c2dPhase sends n messages to id, Concurrency at a time, at most Window
// outstanding, and waits for the device to receive them all and for the
// hub's queue to be empty (every message completed).
func (r *runner) c2dPhase(cfg C2DConfig, svc *service.Client, p *c2dPeer, id string, n int) (c2dPhaseResult, error) {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	var (
		mu        sync.Mutex
		cond      = sync.NewCond(&mu)
		next      int // messages handed to senders
		sent      int // Send returned nil
		received  int
		queueFull int
		firstErr  error
		lat       = make([]time.Duration, 0, n)
	)
	stop := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		cond.Broadcast()
		mu.Unlock()
		cancel()
	}
	// The receipts.
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			select {
			case b, ok := <-p.lines:
				if !ok {
					stop(fmt.Errorf("bench: the c2d device ended: %s", p.stderr()))
					return
				}
				var m c2dMsg
				if json.Unmarshal(b, &m) != nil || m.Type != "c2d" {
					continue
				}
				mu.Lock()
				received++
				lat = append(lat, time.Duration(m.LatUs*1e3))
				cond.Broadcast()
				done := received >= n
				mu.Unlock()
				if done {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	// A stalled device must not hang the run.
	watchdog := time.AfterFunc(time.Minute+time.Duration(n)*20*time.Millisecond, func() {
		mu.Lock()
		got := received
		mu.Unlock()
		stop(fmt.Errorf("bench: the c2d phase timed out: %d of %d received", got, n))
	})
	defer watchdog.Stop()
	go func() {
		<-ctx.Done()
		mu.Lock()
		cond.Broadcast()
		mu.Unlock()
	}()
	cpu0, start := cpuSeconds(), time.Now()
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			mu.Lock()
			defer mu.Unlock()
			for {
				for firstErr == nil && next < n && next-received >= cfg.Window {
					cond.Wait()
				}
				if firstErr != nil || next >= n {
					return
				}
				k := next
				next++
				for {
					mu.Unlock()
					msg := &service.C2DMessage{Body: []byte(`{"n":` + strconv.Itoa(k) + `}`), MessageID: "m" + strconv.Itoa(k),
						Properties: map[string]string{c2dSentProp: strconv.FormatInt(time.Now().UnixNano(), 10)}}
					err := svc.Send(ctx, id, msg)
					mu.Lock()
					if err == nil {
						sent++
						break
					}
					if !errors.Is(err, service.ErrDeviceQueueFull) || ctx.Err() != nil {
						if firstErr == nil {
							firstErr = fmt.Errorf("bench: send: %w", err)
						}
						cond.Broadcast()
						mu.Unlock()
						cancel()
						mu.Lock()
						return
					}
					// The queue holds messages the device received and
					// has not settled yet: retry shortly (not on the next
					// receipt, which may never come).
					queueFull++
					mu.Unlock()
					time.Sleep(c2dRetryDelay)
					mu.Lock()
					if firstErr != nil {
						return
					}
				}
			}
		})
	}
	wg.Wait()
	<-readDone
	mu.Lock()
	err := firstErr
	mu.Unlock()
	if err == nil {
		err = r.ctx.Err()
	}
	if err != nil {
		return c2dPhaseResult{}, err
	}
	// The last completion: the hub's queue for the device is empty.
	for len(r.h.Engine.C2DQueue(id)) > 0 {
		if ctx.Err() != nil {
			return c2dPhaseResult{}, fmt.Errorf("bench: the device did not complete every message: %w", ctx.Err())
		}
		time.Sleep(200 * time.Microsecond)
	}
	return c2dPhaseResult{lat: lat, seconds: time.Since(start).Seconds(), cpu: cpuSeconds() - cpu0, queueFull: queueFull}, nil
}

// RunC2DDevice serves the c2d device protocol (see the file comment) with
// this SDK's device.Client: the body of "iothub bench --c2d-device".
func RunC2DDevice(in io.Reader, out io.Writer) error {
	br := bufio.NewReaderSize(in, 1<<16)
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return fmt.Errorf("bench: reading the device spec: %w", err)
	}
	var spec FleetSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("bench: device spec: %w", err)
	}
	var outMu sync.Mutex
	enc := json.NewEncoder(out)
	emit := func(v any) error {
		outMu.Lock()
		defer outMu.Unlock()
		return enc.Encode(v)
	}
	c, err := connectC2DDevice(spec, emit)
	if err != nil {
		return emit(fleetMsg{Type: "connected", Failed: 1, FirstError: err.Error()})
	}
	if err := emit(fleetMsg{Type: "connected", Connected: 1}); err != nil {
		_ = c.Close(context.Background())
		return err
	}
	for {
		cmd, err := br.ReadString('\n')
		cmd = strings.TrimSpace(cmd)
		if cmd == "stats" {
			if emit(fleetMsg{Type: "stats", CPUSeconds: cpuSeconds()}) != nil {
				break
			}
			continue
		}
		if cmd == "close" || err != nil {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = c.Close(ctx)
	cancel()
	return emit(fleetMsg{Type: "closed"})
}

// connectC2DDevice connects spec's device with a handler that reports
// each message's latency and completes it.
func connectC2DDevice(spec FleetSpec, emit func(any) error) (*device.Client, error) {
	if len(spec.ConnStrings) != 1 {
		return nil, errors.New("bench: the c2d device needs one connection string")
	}
	tlsConf, err := clientTLS(spec.CAPEM)
	if err != nil {
		return nil, err
	}
	tr, err := sdkTransport(spec.Transport)
	if err != nil {
		return nil, err
	}
	c, err := device.NewClientFromConnectionString(spec.ConnStrings[0], &device.ClientOptions{Transport: tr, TLSConfig: tlsConf,
		Retry: iothub.RetryOptions{RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 2 * time.Second}})
	if err != nil {
		return nil, err
	}
	err = c.SetMessageHandler(func(_ context.Context, m *device.CloudMessage) device.Disposition {
		now := time.Now().UnixNano()
		sent, _ := strconv.ParseInt(m.Properties[c2dSentProp], 10, 64)
		_ = emit(c2dMsg{Type: "c2d", LatUs: float64(now-sent) / 1e3})
		return device.Complete
	})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(max(spec.ConnectTimeoutMs, 1000))*time.Millisecond)
		err = c.Connect(ctx)
		cancel()
	}
	if err != nil {
		_ = c.Close(context.Background())
		return nil, err
	}
	return c, nil
}

// medianC2DRow combines the rounds of one row.
func medianC2DRow(rounds []C2DRow) C2DRow {
	if len(rounds) == 1 {
		return rounds[0]
	}
	ok, firstBad, reason := splitRounds(rounds, func(r *C2DRow) (string, string) { return r.Status, r.Reason })
	if len(ok) == 0 {
		out := *firstBad
		out.Rounds = rounds
		return out
	}
	out := C2DRow{Name: ok[0].Name, Impl: ok[0].Impl, Transport: ok[0].Transport, Status: "ok", Reason: reason,
		InProcess: ok[0].InProcess, Rounds: rounds}
	ls := make([]*Latency, len(ok))
	for i, r := range ok {
		ls[i] = r.Latency
		out.Messages += r.Messages
		out.QueueFull += r.QueueFull
		out.Seconds += r.Seconds
	}
	out.Latency = medianLatency(ls)
	out.MsgsPerSec = medianOf(ok, func(r C2DRow) float64 { return r.MsgsPerSec })
	out.HubCPUPerMsg = medianOf(ok, func(r C2DRow) float64 { return r.HubCPUPerMsg })
	out.DeviceCPUPerMsg = medianOf(ok, func(r C2DRow) float64 { return r.DeviceCPUPerMsg })
	out.TotalCPUPerMsg = medianOf(ok, func(r C2DRow) float64 { return r.TotalCPUPerMsg })
	return out
}

// c2dRatios compares the Go device with the Node one per transport.
func c2dRatios(rows []C2DRow) []C2DRatio {
	find := func(name string) *C2DRow {
		i := slices.IndexFunc(rows, func(r C2DRow) bool { return r.Name == name && r.Status == "ok" && r.Latency != nil })
		if i < 0 {
			return nil
		}
		return &rows[i]
	}
	ratio := func(a, b float64) float64 {
		if a <= 0 || b <= 0 {
			return 0
		}
		return round(a/b, 3)
	}
	var out []C2DRatio
	for _, r := range rows {
		a, b := find(r.Name), find(ImplNodeSDK+"/"+r.Transport)
		if r.Impl != ImplGoSDK || a == nil || b == nil {
			continue
		}
		q := C2DRatio{A: a.Name, B: b.Name, MsgsPerSec: ratio(a.MsgsPerSec, b.MsgsPerSec),
			P50Ratio: ratio(a.Latency.P50, b.Latency.P50), P90Ratio: ratio(a.Latency.P90, b.Latency.P90)}
		if !a.InProcess {
			q.DeviceCPURatio = ratio(a.DeviceCPUPerMsg, b.DeviceCPUPerMsg)
			q.TotalCPURatio = ratio(a.TotalCPUPerMsg, b.TotalCPUPerMsg)
		}
		out = append(out, q)
	}
	return out
}

// MarshalIndent is json.MarshalIndent of the result.
func (res *C2DResult) MarshalIndent() ([]byte, error) { return json.MarshalIndent(res, "", "  ") }

// WriteTable writes the result as tables for people.
func (res *C2DResult) WriteTable(w io.Writer) {
	m := res.Machine
	fmt.Fprintf(w, "iothub bench --c2d: %d CPUs (%s), %.1f GB, Linux %s, %s", m.CPUs, m.CPUModel, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.GoVersion)
	if m.NodeVersion != "" {
		fmt.Fprintf(w, ", node %s", m.NodeVersion)
	}
	fmt.Fprintf(w, "; load %.2f before, %.2f after; %.0f s\n", m.LoadBefore, m.LoadAfter, res.Seconds)
	fmt.Fprintf(w, "%d messages per row after %d warm-up, %d sends in flight, at most %d outstanding; ", res.Messages, res.Warmup, res.Concurrency, res.Window)
	if res.Rounds > 1 {
		fmt.Fprintf(w, "median of %d rounds\n\n", res.Rounds)
	} else {
		fmt.Fprintf(w, "one round\n\n")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "device\tstatus\tmessages\tmsgs/s\tp50 µs\tp90 µs\tp99 µs\thub+sender CPU µs/msg\tdevice CPU µs/msg\ttotal CPU µs/msg\tqueue-full retries\t")
	for _, r := range res.Rows {
		if r.Status != "ok" || r.Latency == nil {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\t\n", r.Name, r.Status)
			continue
		}
		fmt.Fprintf(tw, "%s\tok\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%d\t\n", r.Name, r.Messages, r.MsgsPerSec, r.Latency.P50,
			r.Latency.P90, r.Latency.P99, r.HubCPUPerMsg, r.DeviceCPUPerMsg, r.TotalCPUPerMsg, r.QueueFull)
	}
	tw.Flush()
	for _, r := range res.Rows {
		if r.Reason != "" {
			fmt.Fprintf(w, "%s: %s\n", r.Name, r.Reason)
		}
	}
	if len(res.Ratios) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ratio\tmsgs/s\tp50\tp90\tdevice CPU/msg\ttotal CPU/msg\t")
		for _, q := range res.Ratios {
			fmt.Fprintf(tw, "%s ÷ %s\t%s\t%s\t%s\t%s\t%s\t\n", q.A, q.B, ratioText(q.MsgsPerSec), ratioText(q.P50Ratio), ratioText(q.P90Ratio),
				ratioText(q.DeviceCPURatio), ratioText(q.TotalCPURatio))
		}
		tw.Flush()
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
