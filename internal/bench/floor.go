package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"

	"github.com/iothub-go/iothub/auth"
)

// The invoker floor: the same invoker calling an HTTPS server that answers
// every method call at once, with no hub and no device behind it. It runs
// as a fleet process of implementation ImplAnswer (one "device": the
// server), so its CPU is measured like a fleet's. It bounds what any hub
// and device could reach with this invoker on this machine: a round trip
// can be no faster than the invoker's own, and a call costs at least the
// CPU of both ends of one HTTPS exchange.

// ImplAnswer is the fleet implementation that serves the invoker floor: an
// HTTPS server (net/http) that answers every request with status 200 and
// a method result carrying the request's payload size.
const ImplAnswer = "https-answer"

// Invoker floor rows.
const (
	FloorGoService = "go-service" // this SDK's service client
	FloorAzcore    = "azcore"     // a bare azcore pipeline (its default policies) posting the same request
	FloorNetHTTP   = "net-http"   // a bare net/http client posting the same request
)

// floorNames are the invoker floor rows, in the order they run.
var floorNames = []string{FloorGoService, FloorAzcore, FloorNetHTTP}

// FloorRow is one invoker against the answering server.
type FloorRow struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Latency is one call at a time; LoadLatency and CallsPerSec are
	// Concurrency calls in flight.
	Latency     *Latency `json:"latency,omitempty"`
	LoadLatency *Latency `json:"latency_under_load,omitempty"`
	CallsPerSec float64  `json:"calls_per_sec"`
	// InvokerCPUPerCall is this process's CPU per call under load (the
	// hub is idle meanwhile); ServerCPUPerCall the answering server's.
	InvokerCPUPerCall float64 `json:"invoker_cpu_us_per_call"`
	ServerCPUPerCall  float64 `json:"server_cpu_us_per_call"`
}

// startAnswer serves the invoker floor in f until f is closed. The server
// certificate comes from the spec (issued by the hub's CA, so the invoker
// trusts it as it trusts the hub).
func startAnswer(spec FleetSpec) (*goFleet, fleetMsg) {
	msg := fleetMsg{Type: "connected"}
	fail := func(err error) (*goFleet, fleetMsg) {
		msg.Failed, msg.FirstError = 1, err.Error()
		return &goFleet{}, msg
	}
	cert, err := tls.X509KeyPair([]byte(spec.ServerCertPEM), []byte(spec.ServerKeyPEM))
	if err != nil {
		return fail(fmt.Errorf("bench: answer server certificate: %w", err))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			// A method result of about the request's size, as an echoing
			// device's would be.
			body := answerBody(int(n))
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_, _ = w.Write(body)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	msg.Connected = 1
	msg.Addr = ln.Addr().String()
	return &goFleet{closers: []func(){func() { _ = srv.Close() }}}, msg
}

// answerBody is {"status":200,"payload":{"p":"xxx…"}} of about n bytes.
func answerBody(n int) []byte {
	return append(append([]byte(`{"status":200,"payload":`), payloadJSON(max(n-60, 10))...), '}')
}

// answerCert issues the answering server's certificate from the hub's CA
// for the hub's host name, as PEM.
func (r *runner) answerCert() (certPEM, keyPEM string, err error) {
	cert, err := r.h.CA.IssueServer(r.h.Engine.HostName(), "127.0.0.1", "localhost")
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return "", "", err
	}
	var cb bytes.Buffer
	for _, c := range cert.Certificate {
		_ = pem.Encode(&cb, &pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	return cb.String(), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// caller is one way of invoking a method on a device.
type caller interface {
	call(ctx context.Context, deviceID string) error
}

// netHTTPInvoker posts the same request as the service client with a bare
// net/http client: no azcore pipeline, no validation, no decoding beyond
// the status line.
type netHTTPInvoker struct {
	hc   *http.Client
	url  string
	body []byte
	tok  auth.TokenProvider
}

func newNetHTTPInvoker(serviceCS string, tlsConf *tls.Config, payload []byte, conc int) (*netHTTPInvoker, error) {
	cs, err := auth.ParseServiceConnectionString(serviceCS)
	if err != nil {
		return nil, err
	}
	tok, err := cs.TokenProvider(nil)
	if err != nil {
		return nil, err
	}
	host := cs.HostName
	if cs.GatewayHostName != "" {
		host = cs.GatewayHostName
	}
	tc := tlsConf.Clone()
	tc.ServerName = cs.HostName
	return &netHTTPInvoker{
		hc: &http.Client{Transport: &http.Transport{
			TLSClientConfig: tc, MaxIdleConns: conc + 16, MaxIdleConnsPerHost: conc + 16, IdleConnTimeout: 90 * time.Second,
		}},
		url:  "https://" + host + "/twins/%s/methods?api-version=2021-04-12",
		body: append(append([]byte(`{"methodName":"`+Method+`","responseTimeoutInSeconds":30,"payload":`), payload...), '}'),
		tok:  tok,
	}, nil
}

func (n *netHTTPInvoker) call(ctx context.Context, deviceID string) error {
	t, err := n.tok.Token(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf(n.url, deviceID), bytes.NewReader(n.body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", t.Value)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	return drained(n.hc.Do(req))
}

// drained reads and closes the answer of a floor invoker's call, which
// must be 200.
func drained(res *http.Response, err error) error {
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

func (n *netHTTPInvoker) close() { n.hc.CloseIdleConnections() }

// newInvoker returns the invoker floor row name's invoker, calling the
// hub (or the answering server) of serviceCS.
func (r *runner) newInvoker(name, serviceCS string) (caller, func(), error) {
	switch name {
	case FloorGoService:
		g, err := newGoInvoker(serviceCS, r.tlsConf, Method, r.payload, r.cfg.Concurrency)
		if err != nil {
			return nil, nil, err
		}
		return g, g.close, nil
	case FloorAzcore:
		a, err := newAzcoreInvoker(serviceCS, r.tlsConf, r.payload, r.cfg.Concurrency)
		if err != nil {
			return nil, nil, err
		}
		return a, a.close, nil
	default:
		n, err := newNetHTTPInvoker(serviceCS, r.tlsConf, r.payload, r.cfg.Concurrency)
		if err != nil {
			return nil, nil, err
		}
		return n, n.close, nil
	}
}

// azcoreInvoker is the floor azcore sets: the net/http request of
// netHTTPInvoker sent through a bare azcore pipeline, with the policies
// azcore always installs (telemetry, retry, logging, tracing, body
// download) and no others. This SDK's service client is built on azcore.
type azcoreInvoker struct {
	*netHTTPInvoker
	pl runtime.Pipeline
}

func newAzcoreInvoker(serviceCS string, tlsConf *tls.Config, payload []byte, conc int) (*azcoreInvoker, error) {
	n, err := newNetHTTPInvoker(serviceCS, tlsConf, payload, conc)
	if err != nil {
		return nil, err
	}
	pl := runtime.NewPipeline("bench", "v0.0.0", runtime.PipelineOptions{}, &policy.ClientOptions{Transport: n.hc})
	return &azcoreInvoker{netHTTPInvoker: n, pl: pl}, nil
}

func (a *azcoreInvoker) call(ctx context.Context, deviceID string) error {
	t, err := a.tok.Token(ctx)
	if err != nil {
		return err
	}
	req, err := runtime.NewRequest(ctx, http.MethodPost, fmt.Sprintf(a.url, deviceID))
	if err != nil {
		return err
	}
	req.Raw().Header.Set("Authorization", t.Value)
	if err := req.SetBody(streaming.NopCloser(bytes.NewReader(a.body)), "application/json; charset=utf-8"); err != nil {
		return err
	}
	return drained(a.pl.Do(req))
}

// runFloors measures both invokers against the answering server, once per
// round (the rows' medians are taken at the end of the run).
func (r *runner) runFloors() {
	if r.cfg.NoFloors {
		return
	}
	certPEM, keyPEM, err := r.answerCert()
	fail := func(name string, err error) {
		r.res.Floors = append(r.res.Floors, FloorRow{Name: name, Status: "failed", Reason: err.Error()})
		r.logf("invoker floor %s: failed: %v", name, err)
	}
	if err != nil {
		fail(FloorGoService, err)
		return
	}
	spec := FleetSpec{Impl: ImplAnswer, CAPEM: r.caPEM, ServerCertPEM: certPEM, ServerKeyPEM: keyPEM}
	var f fleet
	if r.cfg.InProcess {
		f, err = startLocalFleet(r.ctx, spec)
	} else {
		f, err = startProcFleet(r.ctx, r.cfg.FleetCommand, nil, spec, time.Minute)
	}
	if err != nil {
		fail(FloorGoService, err)
		return
	}
	defer f.close()
	rep := f.report()
	if rep.Addr == "" {
		fail(FloorGoService, errors.New("the answering server did not start: "+rep.FirstError))
		return
	}
	cs, err := auth.ParseServiceConnectionString(r.serviceCS)
	if err != nil {
		fail(FloorGoService, err)
		return
	}
	cs.GatewayHostName = rep.Addr
	floorCS := cs.Reveal()
	for _, name := range floorNames {
		inv, closeInv, err := r.newInvoker(name, floorCS)
		if err != nil {
			fail(name, err)
			continue
		}
		r.res.Floors = append(r.res.Floors, r.floorRow(name, inv, f))
		closeInv()
	}
}

func (r *runner) floorRow(name string, inv caller, f fleet) FloorRow {
	row := FloorRow{Name: name, Status: "ok"}
	ids := []string{"floor"}
	cctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	err := inv.call(cctx, ids[0])
	cancel()
	if err != nil {
		row.Status, row.Reason = "failed", "first call: "+err.Error()
		return row
	}
	r.logf("invoker floor %s: latency, one call at a time, %v", name, r.cfg.LatencyDuration)
	w := runGoPhase(r.ctx, inv, ids, 1, r.cfg.Warmup, r.cfg.LatencyDuration, nil)
	row.Latency = summarize(w.latencies, w.errors, w.firstErr)
	r.logf("invoker floor %s: throughput, %d in flight, %v", name, r.cfg.Concurrency, r.cfg.Duration)
	w = runGoPhase(r.ctx, inv, ids, r.cfg.Concurrency, r.cfg.Warmup, r.cfg.Duration, f)
	t := throughput(w, 1, r.cfg.Concurrency)
	row.LoadLatency, row.CallsPerSec = t.Latency, t.CallsPerSec
	row.InvokerCPUPerCall, row.ServerCPUPerCall = t.HubCPUPerCall, t.DeviceCPUPerCall
	if t.Errors > 0 {
		row.Status, row.Reason = "failed", fmt.Sprintf("%d errors: %s", t.Errors, t.FirstError)
	}
	r.logf("invoker floor %s: p50 %.0f µs, %.0f calls/s", name, row.Latency.P50, row.CallsPerSec)
	return row
}

// medianFloors merges the rounds of each floor row (medians).
func medianFloors(rows []FloorRow) []FloorRow {
	var out []FloorRow
	for _, name := range floorNames {
		var ok []FloorRow
		var failed *FloorRow
		for i := range rows {
			if rows[i].Name != name {
				continue
			}
			if rows[i].Status == "ok" {
				ok = append(ok, rows[i])
			} else if failed == nil {
				failed = &rows[i]
			}
		}
		switch {
		case len(ok) > 0:
			m := FloorRow{Name: name, Status: "ok"}
			var ls, lls []*Latency
			for _, r := range ok {
				ls, lls = append(ls, r.Latency), append(lls, r.LoadLatency)
			}
			m.Latency, m.LoadLatency = medianLatency(ls), medianLatency(lls)
			m.CallsPerSec = medianOf(ok, func(r FloorRow) float64 { return r.CallsPerSec })
			m.InvokerCPUPerCall = medianOf(ok, func(r FloorRow) float64 { return r.InvokerCPUPerCall })
			m.ServerCPUPerCall = medianOf(ok, func(r FloorRow) float64 { return r.ServerCPUPerCall })
			out = append(out, m)
		case failed != nil:
			out = append(out, *failed)
		}
	}
	return out
}
