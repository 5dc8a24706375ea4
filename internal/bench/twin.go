package bench

// Reported-property update round trips: one device updates its twin's
// reported properties with a small patch and waits for the hub's answer
// (MQTT: 204 on $iothub/twin/res with $version; AMQP: a status
// annotation), one update at a time. Unlike a method call, the device
// drives the round trip, so the device's process runs the loop and times
// each update itself; this process (the hub) measures its own CPU over
// the same window, as it does for an invoker process.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	goamqp "github.com/Azure/go-amqp"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// TwinSpec is the twin phase a fleet runs on its first device: Warmup
// updates, then Updates measured ones, one at a time, each a patch
// {"lastReboot": <now, RFC 3339>, "n": <i>} awaiting the hub's answer.
// The parent writes "twin " and the spec as JSON on one line of the
// fleet's stdin; the fleet answers {"type":"twin_window_start"} when the
// measured updates begin (not sent if a warm-up update fails) and then a
// "twin_result" fleetMsg. After it, each "twin-step" line makes the fleet
// do one more update and answer a "twin_step" fleetMsg with its round trip
// (Latencies) or its error: the paired measurement (Result.TwinPairs).
type TwinSpec struct {
	Warmup  int `json:"warmup"`
	Updates int `json:"updates"`
	// TimeoutMs bounds each update; MaxErrors ends the measured loop
	// after that many failed updates. A failed warm-up update ends the
	// phase at once.
	TimeoutMs int `json:"timeout_ms"`
	MaxErrors int `json:"max_errors"`
}

// TwinRow is one device implementation updating reported properties over
// one transport.
type TwinRow struct {
	Name      string `json:"name"` // impl/transport
	Impl      string `json:"impl"`
	Transport string `json:"transport"`
	// Status is "ok", "pending" (this SDK's transport does not carry
	// twins yet), "skipped" or "failed"; Reason says why when not ok.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Warmup is the updates made before the measured ones.
	Warmup int `json:"warmup_updates"`
	// Latency is the round trip of each measured update (Calls is the
	// updates that succeeded), timed by the device's process.
	Latency *Latency `json:"latency,omitempty"`
	// Seconds is the measured window; UpdatesPerSec the updates that
	// succeeded in it, per second (one at a time).
	Seconds       float64 `json:"seconds"`
	UpdatesPerSec float64 `json:"updates_per_sec"`
	// CPU per successful update, in microseconds: this process (the
	// hub; the device too with --inproc), the device's process, and
	// their sum.
	HubCPUPerUpdate    float64 `json:"hub_cpu_us_per_update"`
	DeviceCPUPerUpdate float64 `json:"device_cpu_us_per_update"`
	TotalCPUPerUpdate  float64 `json:"total_cpu_us_per_update"`
	InProcess          bool    `json:"in_process,omitempty"`
	// Rounds holds each round's numbers when there were several; the
	// row's own numbers are then their medians.
	Rounds []TwinRow `json:"rounds,omitempty"`
}

// TwinRatio compares two twin rows of the same run: A ÷ B for each
// number (0 when one side lacks it).
type TwinRatio struct {
	A              string  `json:"a"`
	B              string  `json:"b"`
	P50Ratio       float64 `json:"p50_ratio"`
	P99Ratio       float64 `json:"p99_ratio"`
	DeviceCPURatio float64 `json:"device_cpu_ratio"`
	TotalCPURatio  float64 `json:"total_cpu_ratio"`
}

// Defaults of the twin phase's guards.
const (
	twinUpdateTimeout = 10 * time.Second
	twinMaxErrors     = 5
)

// twinPatch is the i-th update's patch, as the seed's reboot handler
// reports it (a time) plus a counter that makes every patch a change.
func twinPatch(i int) map[string]any {
	return map[string]any{"lastReboot": time.Now().UTC().Format(time.RFC3339Nano), "n": i}
}

// twinUpdate sends one reported-property patch and waits for the hub's
// answer.
type twinUpdate func(ctx context.Context, patch map[string]any) error

// twinUpdater returns the update function of the fleet's first device.
// Whatever a raw client needs first (the MQTT response subscription, the
// AMQP twin links) is set up here, before the warm-up, once per fleet.
func (f *goFleet) twinUpdater(ctx context.Context) (twinUpdate, error) {
	if f.twinUpd == nil {
		upd, err := f.newTwinUpdater(ctx)
		if err != nil {
			return nil, err
		}
		f.twinUpd = upd
	}
	return f.twinUpd, nil
}

func (f *goFleet) newTwinUpdater(ctx context.Context) (twinUpdate, error) {
	switch {
	case len(f.sdk) > 0:
		c := f.sdk[0]
		return func(ctx context.Context, patch map[string]any) error {
			_, err := c.UpdateReportedProperties(ctx, patch)
			return err
		}, nil
	case len(f.paho) > 0:
		return pahoTwinUpdater(ctx, f.paho[0])
	case len(f.amqp) > 0:
		return f.amqp[0].twinUpdater(ctx)
	}
	return nil, errors.New("bench: no connected device for the twin phase")
}

// pahoTwinUpdater is the MQTT floor for twins: paho used directly, one
// SUBSCRIBE of the response topics, then per update one PUBLISH of the
// encoded patch and a wait for the response with its request id.
func pahoTwinUpdater(ctx context.Context, c paho.Client) (twinUpdate, error) {
	res := make(chan string, 16)
	st := c.Subscribe("$iothub/twin/res/#", 0, func(_ paho.Client, m paho.Message) {
		select {
		case res <- m.Topic():
		default: // a stray answer; the update waiting for it times out
		}
	})
	if err := waitToken(ctx, st); err != nil {
		return nil, err
	}
	rid := 0
	return func(ctx context.Context, patch map[string]any) error {
		body, err := json.Marshal(patch)
		if err != nil {
			return err
		}
		rid++
		want := strconv.Itoa(rid)
		c.Publish("$iothub/twin/PATCH/properties/reported/?$rid="+want, 0, false, body)
		for {
			select {
			case topic := <-res:
				status, got, _, err := parseTwinResTopic(topic)
				if err != nil || got != want {
					continue // an earlier request's late answer
				}
				if status < 200 || status >= 300 {
					return fmt.Errorf("bench: the hub answered the patch with status %d", status)
				}
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}, nil
}

// parseTwinResTopic reads $iothub/twin/res/{status}/?$rid={rid}[&$version={v}].
func parseTwinResTopic(topic string) (status int, rid string, version int64, err error) {
	rest, ok := strings.CutPrefix(topic, "$iothub/twin/res/")
	if !ok {
		return 0, "", 0, fmt.Errorf("bench: not a twin response topic: %q", topic)
	}
	st, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return 0, "", 0, fmt.Errorf("bench: twin response topic without a query: %q", topic)
	}
	status, err = strconv.Atoi(st)
	if err != nil {
		return 0, "", 0, fmt.Errorf("bench: twin response status %q: %w", st, err)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return 0, "", 0, fmt.Errorf("bench: twin response topic %q: %w", topic, err)
	}
	rid = q.Get("$rid")
	if rid == "" {
		return 0, "", 0, fmt.Errorf("bench: twin response topic without $rid: %q", topic)
	}
	if v := q.Get("$version"); v != "" {
		if version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, "", 0, fmt.Errorf("bench: twin response $version %q: %w", v, err)
		}
	}
	return status, rid, version, nil
}

// twinUpdater is the AMQP floor for twins: go-amqp used directly, the two
// twin links as the official SDKs attach them (one channel correlation
// id, pre-settled sends), then per update one PATCH message and a wait
// for the answer carrying its correlation id.
func (c *rawAMQP) twinUpdater(ctx context.Context) (twinUpdate, error) {
	addr := "amqps://" + c.id.HostName + "/devices/" + c.id.DeviceID + "/twin"
	props := map[string]any{"com.microsoft:api-version": "2021-04-12", "com.microsoft:channel-correlation-id": "twin:" + c.id.DeviceID}
	settled, first := goamqp.SenderSettleModeSettled, goamqp.ReceiverSettleModeFirst
	out, err := c.sess.NewSender(ctx, addr, &goamqp.SenderOptions{Name: "twin-snd-" + c.id.DeviceID, Properties: props,
		SettlementMode: &settled, RequestedReceiverSettleMode: &first})
	if err != nil {
		return nil, err
	}
	in, err := c.sess.NewReceiver(ctx, addr, &goamqp.ReceiverOptions{Name: "twin-rcv-" + c.id.DeviceID, Properties: props,
		Credit: 16, RequestedSenderSettleMode: &settled, SettlementMode: &first})
	if err != nil {
		return nil, err
	}
	n := 0
	return func(ctx context.Context, patch map[string]any) error {
		body, err := json.Marshal(patch)
		if err != nil {
			return err
		}
		n++
		cid := "p" + strconv.Itoa(n)
		m := &goamqp.Message{
			Annotations: goamqp.Annotations{"operation": "PATCH", "resource": "/properties/reported"},
			Properties:  &goamqp.MessageProperties{CorrelationID: cid},
			Data:        [][]byte{body},
		}
		if err := out.Send(ctx, m, nil); err != nil {
			return err
		}
		for {
			r, err := in.Receive(ctx, nil)
			if err != nil {
				return err
			}
			_ = in.AcceptMessage(ctx, r)
			if r.Properties == nil || r.Properties.CorrelationID != any(cid) {
				continue // a desired notification or a late answer
			}
			status, ok := amqpInt(r.Annotations["status"])
			if !ok {
				return errors.New("bench: the hub's twin answer has no status")
			}
			if status < 200 || status >= 300 {
				return fmt.Errorf("bench: the hub answered the patch with status %d", status)
			}
			return nil
		}
	}, nil
}

func amqpInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case uint32:
		return int64(n), true
	}
	return 0, false
}

// runTwinPhase runs spec with upd. opened is called when the measured
// updates begin. The result's CPUSeconds is this process's CPU time from
// then to the end.
func runTwinPhase(ctx context.Context, upd twinUpdate, spec TwinSpec, opened func()) fleetMsg {
	res := fleetMsg{Type: "twin_result"}
	timeout := time.Duration(spec.TimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = twinUpdateTimeout
	}
	maxErrs := spec.MaxErrors
	if maxErrs <= 0 {
		maxErrs = twinMaxErrors
	}
	one := func(patch map[string]any) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return upd(cctx, patch)
	}
	for i := range spec.Warmup {
		if err := one(twinPatch(i)); err != nil {
			res.Errors, res.FirstError = 1, "warm-up update: "+err.Error()
			return res
		}
	}
	opened()
	lat := make([]float64, 0, spec.Updates)
	cpu0, start := cpuSeconds(), time.Now()
	for i := range spec.Updates {
		patch := twinPatch(spec.Warmup + i)
		t0 := time.Now()
		err := one(patch)
		d := time.Since(t0)
		if err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			if res.Errors >= maxErrs || ctx.Err() != nil {
				break
			}
			continue
		}
		lat = append(lat, us(d))
	}
	res.Seconds = time.Since(start).Seconds()
	res.CPUSeconds = cpuSeconds() - cpu0
	res.Updates, res.Latencies = len(lat), lat
	return res
}

// serveTwin runs the twin phase of a "twin {spec}" line in a fleet
// process and writes its messages with enc.
func serveTwin(f *goFleet, arg string, enc *json.Encoder) error {
	var spec TwinSpec
	if err := json.Unmarshal([]byte(arg), &spec); err != nil {
		return enc.Encode(fleetMsg{Type: "twin_result", Errors: 1, FirstError: "bench: twin spec: " + err.Error()})
	}
	ctx := context.Background()
	upd, err := f.twinUpdater(ctx)
	if err != nil {
		return enc.Encode(fleetMsg{Type: "twin_result", Errors: 1, FirstError: err.Error()})
	}
	var encErr error
	res := runTwinPhase(ctx, upd, spec, func() { encErr = enc.Encode(fleetMsg{Type: "twin_window_start"}) })
	if encErr != nil {
		return encErr
	}
	return enc.Encode(res)
}

// twinStep makes one update with the fleet's first device (after a twin
// phase, which warmed it up) and returns its round trip.
func (f *goFleet) twinStep(ctx context.Context) (time.Duration, error) {
	upd, err := f.twinUpdater(ctx)
	if err != nil {
		return 0, err
	}
	f.twinSteps++
	patch := twinPatch(1_000_000_000 + f.twinSteps)
	cctx, cancel := context.WithTimeout(ctx, twinUpdateTimeout)
	defer cancel()
	t0 := time.Now()
	err = upd(cctx, patch)
	return time.Since(t0), err
}

// serveTwinStep answers a "twin-step" line in a fleet process.
func serveTwinStep(f *goFleet, enc *json.Encoder) error {
	d, err := f.twinStep(context.Background())
	if err != nil {
		return enc.Encode(fleetMsg{Type: "twin_step", Errors: 1, FirstError: err.Error()})
	}
	return enc.Encode(fleetMsg{Type: "twin_step", Updates: 1, Latencies: []float64{us(d)}})
}

// twinWindow turns a twin_result into a window: the device's CPU is what
// its process measured over its own window.
func twinWindow(m fleetMsg) window {
	w := window{seconds: m.Seconds, errors: m.Errors, firstErr: m.FirstError, fleetCPU: m.CPUSeconds,
		latencies: make([]time.Duration, len(m.Latencies))}
	for i, l := range m.Latencies {
		w.latencies[i] = time.Duration(l * 1e3)
	}
	return w
}

// twinPhaseTimeout is how long the parent waits for each message of a
// twin phase: generous, as the fleet bounds each update itself.
func twinPhaseTimeout(spec TwinSpec) time.Duration {
	per := time.Duration(spec.TimeoutMs) * time.Millisecond
	if per <= 0 {
		per = twinUpdateTimeout
	}
	return time.Minute + time.Duration(spec.Warmup+spec.Updates)*100*time.Millisecond + time.Duration(max(spec.MaxErrors, twinMaxErrors)+1)*per
}

func (l *localFleet) twinStep(ctx context.Context) (time.Duration, error) { return l.f.twinStep(ctx) }

// twinStep asks the fleet's process for one update.
func (p *procFleet) twinStep(ctx context.Context) (time.Duration, error) {
	if _, err := io.WriteString(p.stdin, "twin-step\n"); err != nil {
		return 0, fmt.Errorf("bench: twin step: %w", err)
	}
	m, err := p.read(ctx, "twin_step", twinUpdateTimeout+30*time.Second)
	if err != nil {
		return 0, err
	}
	if m.Errors > 0 || len(m.Latencies) != 1 {
		return 0, fmt.Errorf("bench: twin step: %s", m.FirstError)
	}
	return time.Duration(m.Latencies[0] * 1e3), nil
}

// twin runs the phase in this process: the CPU is the whole process's
// (hub and device), reported as the hub's.
func (l *localFleet) twin(ctx context.Context, spec TwinSpec) (window, error) {
	upd, err := l.f.twinUpdater(ctx)
	if err != nil {
		return window{}, err
	}
	w := twinWindow(runTwinPhase(ctx, upd, spec, func() {}))
	w.cpu, w.fleetCPU = w.fleetCPU, 0
	return w, nil
}

// twin runs the phase in the fleet's process. This process's CPU (the
// hub's) is measured from the fleet's "twin_window_start" to its result.
func (p *procFleet) twin(ctx context.Context, spec TwinSpec) (window, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return window{}, err
	}
	if _, err := io.WriteString(p.stdin, "twin "+string(b)+"\n"); err != nil {
		return window{}, fmt.Errorf("bench: starting the twin phase: %w", err)
	}
	timeout := twinPhaseTimeout(spec)
	m, err := p.readOneOf(ctx, timeout, "twin_window_start", "twin_result")
	if err != nil {
		return window{}, err
	}
	var hubCPU float64
	if m.Type == "twin_window_start" {
		cpu0 := cpuSeconds()
		if m, err = p.read(ctx, "twin_result", timeout); err != nil {
			return window{}, err
		}
		hubCPU = cpuSeconds() - cpu0
	}
	w := twinWindow(m)
	w.cpu = hubCPU
	return w, nil
}

func (r *runner) twinSpec() TwinSpec {
	return TwinSpec{Warmup: max(r.cfg.TwinWarmup, 0), Updates: r.cfg.TwinUpdates,
		TimeoutMs: int(twinUpdateTimeout / time.Millisecond), MaxErrors: twinMaxErrors}
}

// runTwinRow measures one implementation's reported-property updates on
// one transport, with a fleet of one fresh device.
func (r *runner) runTwinRow(rs rowSpec) TwinRow {
	row := TwinRow{Name: rs.impl + "/" + rs.transport, Impl: rs.impl, Transport: rs.transport, Status: "ok",
		Warmup: max(r.cfg.TwinWarmup, 0), InProcess: r.cfg.InProcess && rs.impl != ImplNodeSDK}
	fail := func(err error) TwinRow {
		row.Status, row.Reason = "failed", err.Error()
		r.logf("twin %s: %s: %s", row.Name, row.Status, row.Reason)
		return row
	}
	if rs.impl == ImplNodeSDK && r.cfg.NodeDir == "" {
		row.Status, row.Reason = "skipped", "no Node folder (--node-dir)"
		return row
	}
	if rs.impl == ImplGoSDK {
		tr, err := sdkTransport(rs.transport)
		if err != nil {
			return fail(err)
		}
		if err := tr.TwinSupport(); err != nil {
			row.Status, row.Reason = "pending", err.Error()
			r.logf("twin %s: pending: %s", row.Name, row.Reason)
			return row
		}
	}
	r.rowSeq++
	creds, err := r.register(fmt.Sprintf("t%d", r.rowSeq), 1)
	if err != nil {
		return fail(err)
	}
	f, err := r.startFleet(rs.impl, rs.transport, creds, 20*time.Second, profiles{"twin-" + strings.ReplaceAll(row.Name, "/", "-"), true})
	if err != nil {
		return fail(err)
	}
	defer f.close()
	if rep := f.report(); rep.Connected != 1 {
		return fail(fmt.Errorf("the device did not connect: %s", rep.FirstError))
	}
	spec := r.twinSpec()
	r.logf("twin %s: %d reported-property updates one at a time, after %d warm-up", row.Name, spec.Updates, spec.Warmup)
	w, err := f.twin(r.ctx, spec)
	if err != nil {
		return fail(err)
	}
	if len(w.latencies) == 0 {
		return fail(fmt.Errorf("no update succeeded: %s", w.firstErr))
	}
	fillTwinRow(&row, w)
	r.logf("twin %s: p50 %.0f µs, p99 %.0f µs, device CPU %.0f µs/update", row.Name, row.Latency.P50, row.Latency.P99, row.DeviceCPUPerUpdate)
	return row
}

// fillTwinRow sets row's numbers from a measured window.
func fillTwinRow(row *TwinRow, w window) {
	row.Latency = summarize(w.latencies, w.errors, w.firstErr)
	row.Seconds = round(w.seconds, 3)
	n := float64(len(w.latencies))
	if w.seconds > 0 {
		row.UpdatesPerSec = round(n/w.seconds, 1)
	}
	if n > 0 {
		row.HubCPUPerUpdate = round(w.cpu*1e6/n, 1)
		row.DeviceCPUPerUpdate = round(w.fleetCPU*1e6/n, 1)
		row.TotalCPUPerUpdate = round((w.cpu+w.fleetCPU)*1e6/n, 1)
	}
}

// medianTwinRow combines the rounds of one twin row, as medianRow does.
func medianTwinRow(rounds []TwinRow) TwinRow {
	if len(rounds) == 1 {
		return rounds[0]
	}
	ok, firstBad, reason := splitRounds(rounds, func(r *TwinRow) (string, string) { return r.Status, r.Reason })
	if len(ok) == 0 {
		out := *firstBad
		out.Rounds = rounds
		return out
	}
	out := TwinRow{Name: ok[0].Name, Impl: ok[0].Impl, Transport: ok[0].Transport, Status: "ok", Warmup: ok[0].Warmup,
		InProcess: ok[0].InProcess, Rounds: rounds, Reason: reason}
	ls := make([]*Latency, len(ok))
	for i, r := range ok {
		ls[i] = r.Latency
		out.Seconds += r.Seconds
	}
	out.Latency = medianLatency(ls)
	out.UpdatesPerSec = medianOf(ok, func(r TwinRow) float64 { return r.UpdatesPerSec })
	out.HubCPUPerUpdate = medianOf(ok, func(r TwinRow) float64 { return r.HubCPUPerUpdate })
	out.DeviceCPUPerUpdate = medianOf(ok, func(r TwinRow) float64 { return r.DeviceCPUPerUpdate })
	out.TotalCPUPerUpdate = medianOf(ok, func(r TwinRow) float64 { return r.TotalCPUPerUpdate })
	return out
}

// twinRatios compares this SDK's twin row on each transport with the
// raw floor's and the Node SDK's on the same transport.
func twinRatios(rows []TwinRow) []TwinRatio {
	find := func(name string) *TwinRow {
		for i := range rows {
			if rows[i].Name == name && rows[i].Status == "ok" && rows[i].Latency != nil {
				return &rows[i]
			}
		}
		return nil
	}
	ratio := func(a, b float64) float64 {
		if a <= 0 || b <= 0 {
			return 0
		}
		return round(a/b, 3)
	}
	var out []TwinRatio
	for _, r := range rows {
		if r.Impl != ImplGoSDK || find(r.Name) == nil {
			continue
		}
		a := find(r.Name)
		for _, base := range []string{rawImpl(r.Transport), ImplNodeSDK} {
			b := find(base + "/" + r.Transport)
			if base == "" || b == nil {
				continue
			}
			tr := TwinRatio{A: a.Name, B: b.Name, P50Ratio: ratio(a.Latency.P50, b.Latency.P50), P99Ratio: ratio(a.Latency.P99, b.Latency.P99)}
			// A device measured in the hub's process has no CPU of its own.
			if !a.InProcess && !b.InProcess {
				tr.DeviceCPURatio = ratio(a.DeviceCPUPerUpdate, b.DeviceCPUPerUpdate)
				tr.TotalCPURatio = ratio(a.TotalCPUPerUpdate, b.TotalCPUPerUpdate)
			}
			out = append(out, tr)
		}
	}
	return out
}

// runTwinPairs compares this SDK's update latency with each baseline's on
// the same transport, updates alternating between the two devices (see
// Pair), among the twin rows that worked.
func (r *runner) runTwinPairs() {
	ok := func(name string) bool {
		for _, t := range r.res.Twins {
			if t.Name == name && t.Status == "ok" {
				return true
			}
		}
		return false
	}
	for _, t := range r.cfg.Transports {
		if !ok(ImplGoSDK + "/" + t) {
			continue
		}
		for _, base := range []string{rawImpl(t), ImplNodeSDK} {
			if r.ctx.Err() != nil {
				return
			}
			if base != "" && ok(base+"/"+t) {
				r.res.TwinPairs = append(r.res.TwinPairs, r.runTwinPair(rowSpec{ImplGoSDK, t}, rowSpec{base, t}))
			}
		}
	}
}

// runTwinPair warms up one device of a and one of b as a twin row does,
// then has them update alternately (A B B A …), Rounds × TwinUpdates
// updates each. Each device times its own updates; the parent's request
// for the next one is not in the numbers.
func (r *runner) runTwinPair(a, b rowSpec) Pair {
	p := Pair{A: a.impl + "/" + a.transport, B: b.impl + "/" + b.transport, Status: "ok"}
	fail := func(err error) Pair {
		p.Status, p.Reason = "failed", err.Error()
		r.logf("twin pair %s vs %s: %v", p.A, p.B, err)
		return p
	}
	r.rowSeq++
	fleets, _, stop, err := r.groupFleets("tp", []rowSpec{a, b}, 1)
	defer stop()
	if err != nil {
		return fail(err)
	}
	for i, rs := range []rowSpec{a, b} {
		spec := r.twinSpec()
		spec.Updates = 0
		w, err := fleets[i].twin(r.ctx, spec)
		if err != nil {
			return fail(err)
		}
		if w.errors > 0 {
			return fail(fmt.Errorf("%s: %s", rs.impl, w.firstErr))
		}
	}
	n := r.cfg.TwinUpdates * r.cfg.Rounds
	r.logf("twin pair %s vs %s: %d updates each, alternating", p.A, p.B, n)
	var lat [2][]time.Duration
	var errs [2]int
	var firstErr [2]string
	order := []int{0, 1, 1, 0}
	for k := 0; k < 2*n && r.ctx.Err() == nil; k++ {
		i := order[k%len(order)]
		d, err := fleets[i].twinStep(r.ctx)
		if err != nil {
			errs[i]++
			if firstErr[i] == "" {
				firstErr[i] = err.Error()
			}
			if errs[i] >= twinMaxErrors {
				break
			}
			continue
		}
		lat[i] = append(lat[i], d)
	}
	p.LatA = summarize(lat[0], errs[0], firstErr[0])
	p.LatB = summarize(lat[1], errs[1], firstErr[1])
	if p.LatB.P50 > 0 && p.LatB.P90 > 0 {
		p.P50Ratio = round(p.LatA.P50/p.LatB.P50, 3)
		p.P90Ratio = round(p.LatA.P90/p.LatB.P90, 3)
	}
	return p
}
