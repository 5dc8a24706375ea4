package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iothub-go/iothub"
	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/faultproxy"
	"github.com/iothub-go/iothub/transport/amqp"
)

// The multiplexed device implementations (iothub bench --multiplex).
const (
	// ImplGoPool is this SDK's device.Client on an amqp.Pool.
	ImplGoPool = "go-sdk-pool"
	// ImplAMQPRawPool is the floor of ImplGoPool: go-amqp used directly in
	// the same layout (a connection per PoolPerConn devices, one session
	// and one $cbs link pair on it, a put-token and two method links per
	// device, one goroutine per device answering its requests).
	ImplAMQPRawPool = "amqp-raw-pool"
)

// muxState is the pooled part of a Go fleet.
type muxState struct {
	pool  *amqp.Pool
	proxy *faultproxy.Proxy
	total atomic.Int64 // clients connected at least once
	up    atomic.Int64 // clients connected now
	raw   *rawPool
	// gaveUp counts the clients that stopped reconnecting
	// (ConnectionStateDisconnected with an error), gaveUpErr keeps the
	// first one's reason.
	gaveUp    atomic.Int64
	gaveUpErr atomic.Pointer[string]
}

// poolConnect returns the connect function of an ImplGoPool fleet.
func poolConnect(spec FleetSpec, tlsConf *tls.Config) (*muxState, func(context.Context, string) (func(*goFleet), error), error) {
	pool, err := amqp.NewPool(&amqp.PoolOptions{DevicesPerConn: spec.PoolPerConn, DialRate: spec.PoolDialRate})
	if err != nil {
		return nil, nil, err
	}
	st := &muxState{pool: pool}
	rewrite := func(cs string) string { return cs }
	if spec.Proxy && len(spec.ConnStrings) > 0 {
		c, err := auth.ParseDeviceConnectionString(spec.ConnStrings[0])
		if err != nil {
			return nil, nil, err
		}
		p, err := faultproxy.New(c.Address())
		if err != nil {
			return nil, nil, err
		}
		st.proxy = p
		rewrite = func(cs string) string {
			return strings.Replace(cs, "GatewayHostName="+c.Address(), "GatewayHostName="+p.Addr(), 1)
		}
	}
	connect := func(ctx context.Context, cs string) (func(*goFleet), error) {
		var connected atomic.Bool
		c, err := device.NewClientFromConnectionString(rewrite(cs), &device.ClientOptions{
			Transport: pool,
			TLSConfig: tlsConf,
			Retry:     iothub.RetryOptions{RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
			OnConnectionStatus: func(s device.ConnectionStatus) {
				if s.State == device.ConnectionStateDisconnected && s.Err != nil {
					st.gaveUp.Add(1)
					e := s.Err.Error()
					st.gaveUpErr.CompareAndSwap(nil, &e)
				}
				now := s.State == device.ConnectionStateConnected
				if connected.Swap(now) == now {
					return
				}
				if now {
					st.up.Add(1)
				} else {
					st.up.Add(-1)
				}
			},
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
		st.total.Add(1)
		return func(f *goFleet) { f.sdk = append(f.sdk, c) }, nil
	}
	return st, connect, nil
}

// cut cuts every pooled connection at once (through the fleet's proxy)
// and waits until every client is connected again. If some are not by
// timeout, the error says in which state clients are.
func (st *muxState) cut(timeout time.Duration, clients []*device.Client) fleetMsg {
	msg := fleetMsg{Type: "recovered"}
	if st == nil || st.proxy == nil {
		msg.FirstError = "bench: the fleet has no proxy to cut"
		return msg
	}
	b := sampleMem()
	msg.Before = &b
	before := st.pool.Stats()
	total := st.total.Load()
	gcN, gcCPU := gcCounters()
	start := time.Now()
	msg.CutConns = st.proxy.Cut()
	deadline := start.Add(timeout)
	// The loss is seen asynchronously: first wait for it, then for every
	// client to be back.
	for st.up.Load() == total && time.Since(start) < 10*time.Second {
		time.Sleep(time.Millisecond)
	}
	var peak int64
	for st.up.Load() < total {
		peak = max(peak, rss())
		if time.Now().After(deadline) {
			msg.FirstError = fmt.Sprintf("bench: %d of %d clients connected %v after the cut; %s", st.up.Load(), total, timeout, st.states(clients))
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	msg.RecoverySeconds = time.Since(start).Seconds()
	n, c := gcCounters()
	msg.GCCycles, msg.GCCPUSeconds = n-gcN, c-gcCPU
	msg.PeakRSS = max(peak, rss())
	m := sampleMem()
	msg.After = &m
	after := st.pool.Stats()
	msg.Connected = int(st.up.Load())
	msg.Dials = after.Dials - before.Dials
	msg.PeakDialRate = after.PeakRate
	msg.Conns = after.Conns
	return msg
}

// states counts clients by connection state, with the pool's counters
// and why the first client that stopped reconnecting did.
func (st *muxState) states(clients []*device.Client) string {
	var n [device.ConnectionStateClosed + 1]int
	for _, c := range clients {
		if s := c.ConnectionState(); s >= 0 && int(s) < len(n) {
			n[s]++
		}
	}
	ps := st.pool.Stats()
	out := fmt.Sprintf("clients %d connected, %d connecting, %d disconnected, %d closed; the pool has %d connections carrying %d devices",
		n[device.ConnectionStateConnected], n[device.ConnectionStateConnecting], n[device.ConnectionStateDisconnected], n[device.ConnectionStateClosed], ps.Conns, ps.Devices)
	if e := st.gaveUpErr.Load(); e != nil {
		out += fmt.Sprintf("; %d stopped reconnecting, the first with: %s", st.gaveUp.Load(), *e)
	}
	return out
}

func (st *muxState) close() {
	if st == nil {
		return
	}
	if st.pool != nil {
		_ = st.pool.Close()
	}
	if st.proxy != nil {
		_ = st.proxy.Close()
	}
	if st.raw != nil {
		st.raw.close()
	}
}

// rawPool is the ImplAMQPRawPool floor: go-amqp connections each carrying
// up to perConn devices on one session.
type rawPool struct {
	perConn int
	tls     *tls.Config

	mu    sync.Mutex
	conns []*rawPoolConn
}

type rawPoolConn struct {
	once  sync.Once
	err   error
	count int // devices placed (under rawPool.mu)
	ac    *goamqp.Conn
	s     *goamqp.Session
	cbsMu sync.Mutex
	out   *goamqp.Sender
	in    *goamqp.Receiver
	done  []chan struct{}
	seq   int
}

// rawPoolConnect returns the connect function of an ImplAMQPRawPool fleet.
func rawPoolConnect(spec FleetSpec, tlsConf *tls.Config) (*muxState, func(context.Context, string) (func(*goFleet), error)) {
	per := spec.PoolPerConn
	if per <= 0 {
		per = amqp.DefaultDevicesPerConn
	}
	rp := &rawPool{perConn: per, tls: tlsConf}
	return &muxState{raw: rp}, func(ctx context.Context, cs string) (func(*goFleet), error) {
		return func(*goFleet) {}, rp.add(ctx, cs)
	}
}

// add puts one device on the pool's current connection.
func (rp *rawPool) add(ctx context.Context, connStr string) error {
	rc, err := rawConnect(ctx, connStr, ImplAMQPRaw, rp.tls)
	if err != nil {
		return err
	}
	rp.mu.Lock()
	var c *rawPoolConn
	if n := len(rp.conns); n > 0 && rp.conns[n-1].count < rp.perConn {
		c = rp.conns[n-1]
	} else {
		c = &rawPoolConn{}
		rp.conns = append(rp.conns, c)
	}
	c.count++
	rp.mu.Unlock()
	c.once.Do(func() { c.err = c.open(ctx, rc) })
	if c.err != nil {
		return c.err
	}
	id := rc.cs.Identity()
	if err := c.putToken(ctx, id, rc.token.Value); err != nil {
		return err
	}
	done, err := rawMethodLinks(ctx, c.s, id, false)
	if err != nil {
		return err
	}
	c.cbsMu.Lock()
	c.done = append(c.done, done)
	c.cbsMu.Unlock()
	return nil
}

func (c *rawPoolConn) open(ctx context.Context, rc *rawConn) error {
	nc, err := (&tls.Dialer{Config: rc.tls}).DialContext(ctx, "tcp", rc.cs.Address())
	if err != nil {
		return err
	}
	ac, err := goamqp.NewConn(ctx, nc, &goamqp.ConnOptions{HostName: rc.cs.HostName})
	if err != nil {
		nc.Close()
		return err
	}
	c.ac = ac
	if c.s, err = ac.NewSession(ctx, nil); err != nil {
		return err
	}
	if c.out, err = c.s.NewSender(ctx, "$cbs", nil); err != nil {
		return err
	}
	c.in, err = c.s.NewReceiver(ctx, "$cbs", &goamqp.ReceiverOptions{Credit: 1})
	return err
}

// putToken authenticates id on the connection, one put-token at a time.
func (c *rawPoolConn) putToken(ctx context.Context, id auth.Identity, token string) error {
	c.cbsMu.Lock()
	defer c.cbsMu.Unlock()
	c.seq++
	to, reply := "$cbs", "cbs"
	put := &goamqp.Message{
		Properties: &goamqp.MessageProperties{MessageID: fmt.Sprintf("put-%d", c.seq), To: &to, ReplyTo: &reply},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken",
			"name": id.HostName + "/devices/" + id.DeviceID},
		Value: token,
	}
	if err := c.out.Send(ctx, put, nil); err != nil {
		return err
	}
	res, err := c.in.Receive(ctx, nil)
	if err != nil {
		return err
	}
	_ = c.in.AcceptMessage(ctx, res)
	if code := fmt.Sprint(res.ApplicationProperties["status-code"]); code != "200" && code != "202" {
		return fmt.Errorf("bench: put-token: status %s", code)
	}
	return nil
}

func (rp *rawPool) close() {
	rp.mu.Lock()
	conns := rp.conns
	rp.conns = nil
	rp.mu.Unlock()
	for _, c := range conns {
		if c.ac != nil {
			c.ac.Close()
		}
		for _, d := range c.done {
			<-d
		}
	}
}
