package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hub/store"
	"github.com/iothub-go/iothub/internal/pki"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// hubConfig is the parsed command line of "iothub hub".
type hubConfig struct {
	host          string
	mqttAddr      string
	amqpAddr      string
	httpsAddr     string
	caFile        string
	loadCACert    string
	loadCAKey     string
	ownerKey      string
	dataDir       string
	devices       multiFlag
	deviceCAs     multiFlag
	quiet         bool
	maxActiveJobs int
	c2d           engine.C2DConfig
	// printEvents prints one line per device-to-cloud message (hub_events.go).
	printEvents bool
	output      output

	// ui serves the web dashboard under /ui on the HTTPS port.
	ui bool
}

func parseHubFlags(args []string, stderr io.Writer) (*hubConfig, error) {
	var c hubConfig
	fs := flag.NewFlagSet("iothub hub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: iothub hub [flags]

Runs a local, protocol-faithful IoT Hub until SIGINT or SIGTERM (then it
exits with status 0). It logs connections and method calls on stderr
(never keys or payloads).

--output text (the default) prints the connection strings on stdout, in
the form of shell variable assignments, then, with --print-events, one
line per device-to-cloud message:

  IOTHUB_SERVICE_CONNECTION_STRING=HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=…
  IOTHUB_DEVICE_CONNECTION_STRING=HostName=localhost;DeviceId=dev1;SharedAccessKey=…
  EVENT dev1 mqtt {"messageId":"m-1"} "{\"temp\":21.5}"

--output json prints one JSON document for the hub, then one per message:

  {"type":"hub","hostName":"localhost","mqttAddr":"127.0.0.1:8883","amqpAddr":"127.0.0.1:5671","httpsAddr":"127.0.0.1:443","serviceConnectionString":"…","devices":[{"deviceId":"dev1","connectionString":"…"}]}
  {"type":"event","deviceId":"dev1","protocol":"mqtt","messageId":"m-1","body":"{\"temp\":21.5}","enqueuedTime":"…"}

An event's body is the whole body, as a string when it is UTF-8 and as
"bodyBase64" otherwise; moduleId, the other system properties and
"properties" (the application properties) appear when set, as "caFile"
does with --ca-file.

--data DIR keeps the hub's state in DIR across restarts: the registry
(devices, modules, keys, etags, status, X.509 registrations), twins, jobs,
cloud-to-device queues, the policies' keys, the hub's CA and the trusted
device CAs. Every change is on disk before the hub acknowledges it.
docs/hub-persistence.md says what is kept and how.

`+exitCodesHelp+`
flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.host, "host", "localhost", "the hub's host name (SAS audience; HostName in connection strings)")
	fs.StringVar(&c.mqttAddr, "mqtt-addr", "127.0.0.1:8883", "MQTT over TLS listen address")
	fs.StringVar(&c.amqpAddr, "amqp-addr", "127.0.0.1:5671", "AMQP over TLS listen address")
	fs.StringVar(&c.httpsAddr, "https-addr", "127.0.0.1:443", "HTTPS service API and WebSocket listen address")
	fs.StringVar(&c.caFile, "ca-file", "", "write the hub's CA certificate (PEM) to this file, for clients to trust")
	fs.StringVar(&c.loadCACert, "load-ca-cert", "", "load the hub's CA certificate (PEM) from this file instead of generating one\n(with --data, it replaces the CA kept there)")
	fs.StringVar(&c.loadCAKey, "load-ca-key", "", "load the hub's CA private key (PEM, ECDSA) from this file")
	fs.StringVar(&c.ownerKey, "owner-key", "", "base64 primary key of the iothubowner policy (random if empty; with --data, the kept one)")
	fs.StringVar(&c.dataDir, "data", "", "keep the registry, twins, jobs, C2D queues, keys and CAs in this directory across restarts\n(created if needed; without it the hub keeps everything in memory)")
	fs.Var(&c.devices, "device", "register a device with this id (repeatable); its connection string is printed")
	fs.Var(&c.deviceCAs, "device-ca", "trust the CA certificate(s) in this PEM file for devices whose authentication type is\ncertificateAuthority, as uploading and verifying a CA does on IoT Hub (repeatable)")
	fs.IntVar(&c.maxActiveJobs, "max-active-jobs", 1, "jobs that may be active (scheduled, queued or running) at once, as the hub's tier allows:\n1 on Free and S1 (the default), 5 on S2, 10 on S3; 0 for no limit")
	fs.DurationVar(&c.c2d.DefaultTTL, "c2d-default-ttl", 0, "expiry of cloud-to-device messages whose sender set none, 1m to 48h (default 1h)")
	fs.IntVar(&c.c2d.MaxDeliveryCount, "c2d-max-delivery-count", 0, "abandons before a cloud-to-device message is dead-lettered, 1 to 100 (default 10)")
	fs.BoolVar(&c.quiet, "quiet", false, "do not log connections and method calls")
	fs.BoolVar(&c.ui, "ui", false, "serve a web dashboard at /ui on the HTTPS address; a one-time login link is printed\non stderr (the iothubowner key also logs in)")
	fs.BoolVar(&c.printEvents, "print-events", false, "print one line per device-to-cloud message to stdout:\nEVENT {deviceId[/moduleId]} {protocol} {properties as JSON} {body as a Go-quoted string, cut at 200 bytes}\n(with --output json, one JSON document)")
	outputFlag(fs, &c.output)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("iothub: unexpected argument %q", fs.Arg(0))
	}
	if (c.loadCACert == "") != (c.loadCAKey == "") {
		return nil, errors.New("iothub: --load-ca-cert and --load-ca-key go together")
	}
	if err := c.c2d.CheckSettings(); err != nil {
		return nil, fmt.Errorf("iothub: --c2d-…: %w", err)
	}
	if c.maxActiveJobs < 0 {
		return nil, errors.New("iothub: --max-active-jobs must be 0 (no limit) or more")
	}
	for _, d := range c.devices {
		if err := auth.CheckID(d); err != nil {
			return nil, fmt.Errorf("iothub: --device %q: %w", d, err)
		}
	}
	return &c, nil
}

func runHub(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseHubFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serveHub(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, err)
		return exitCode(err)
	}
	return exitOK
}

// hubInfo is the first document of "iothub hub --output json".
type hubInfo struct {
	Type                    string      `json:"type"` // "hub"
	HostName                string      `json:"hostName"`
	MQTTAddr                string      `json:"mqttAddr"`
	AMQPAddr                string      `json:"amqpAddr"`
	HTTPSAddr               string      `json:"httpsAddr"`
	CAFile                  string      `json:"caFile,omitempty"`
	ServiceConnectionString string      `json:"serviceConnectionString"`
	Devices                 []hubDevice `json:"devices"`
}

// hubDevice is one --device of hubInfo.
type hubDevice struct {
	DeviceID         string `json:"deviceId"`
	ConnectionString string `json:"connectionString"`
}

// serveHub runs the hub until ctx ends. Errors in its configuration
// (files, keys) are usageErrors.
func serveHub(ctx context.Context, cfg *hubConfig, stdout, stderr io.Writer) error {
	var ca *pki.CA
	if cfg.loadCACert != "" {
		certPEM, err := os.ReadFile(cfg.loadCACert)
		if err != nil {
			return usageError{fmt.Errorf("iothub: %w", err)}
		}
		keyPEM, err := os.ReadFile(cfg.loadCAKey)
		if err != nil {
			return usageError{fmt.Errorf("iothub: %w", err)}
		}
		if ca, err = pki.LoadCA(certPEM, keyPEM); err != nil {
			return usageError{err}
		}
	}
	deviceCAFiles := cfg.deviceCAs
	var st *store.Store
	if cfg.dataDir != "" {
		var err error
		if st, err = store.Open(cfg.dataDir); err != nil {
			return err
		}
		defer st.Close()
		if ca, err = dataCA(cfg.dataDir, ca); err != nil {
			return err
		}
		if deviceCAFiles, err = dataDeviceCAFiles(cfg.dataDir, cfg.deviceCAs); err != nil {
			return usageError{err}
		}
	}
	deviceCAs, err := loadDeviceCAs(deviceCAFiles, stderr)
	if err != nil {
		return usageError{err}
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if cfg.quiet {
		logger = nil
	}
	maxJobs := cfg.maxActiveJobs
	if maxJobs == 0 {
		maxJobs = -1 // no limit
	}
	opts := hub.Options{
		MaxActiveJobs: maxJobs,
		C2D:           cfg.c2d,
		HostName:      cfg.host,
		Addrs:         []string{cfg.mqttAddr, cfg.amqpAddr, cfg.httpsAddr},
		CA:            ca,
		TrustedCAs:    deviceCAs,
		OwnerKey:      cfg.ownerKey,
		Logger:        logger,
		UI:            cfg.ui,
	}
	if st != nil {
		opts.Store = st // a nil *store.Store must not become a non-nil engine.Store
	}
	h, err := hub.Start(opts)
	if err != nil {
		return err
	}
	defer h.Close()
	if cfg.caFile != "" {
		if err := os.WriteFile(cfg.caFile, h.CA.CertPEM(), 0o644); err != nil {
			return fmt.Errorf("iothub: writing --ca-file: %w", err)
		}
	}
	addrs := h.Addrs()
	owner, _ := h.Engine.Policy("iothubowner")
	svc := auth.ConnectionString{HostName: cfg.host, SharedAccessKeyName: owner.Name, SharedAccessKey: owner.PrimaryKey,
		GatewayHostName: gateway(cfg.host, addrs[2], "443")}
	info := hubInfo{Type: "hub", HostName: cfg.host, MQTTAddr: addrs[0].String(), AMQPAddr: addrs[1].String(), HTTPSAddr: addrs[2].String(),
		CAFile: cfg.caFile, ServiceConnectionString: svc.Reveal(), Devices: []hubDevice{}}
	for _, id := range cfg.devices {
		d, herr := h.Engine.PutDevice(id, engine.Device{}, "")
		if herr != nil && herr.Code == engine.CodeDeviceAlreadyExists && cfg.dataDir != "" {
			d, herr = h.Engine.GetDevice(id) // kept from an earlier run
			if herr == nil && d.Authentication.SymmetricKey.PrimaryKey == nil {
				return usageError{fmt.Errorf("iothub: --device %s: the device kept in --data does not use SAS keys", id)}
			}
		}
		if herr != nil {
			return herr
		}
		cs := auth.ConnectionString{HostName: cfg.host, DeviceID: id, SharedAccessKey: *d.Authentication.SymmetricKey.PrimaryKey,
			GatewayHostName: gateway(cfg.host, addrs[0], "8883")}
		info.Devices = append(info.Devices, hubDevice{DeviceID: id, ConnectionString: cs.Reveal()})
	}
	if cfg.output == outputJSON {
		if err := writeJSON(stdout, info); err != nil {
			return fmt.Errorf("iothub: %w", err)
		}
	} else {
		fmt.Fprintf(stdout, "IOTHUB_SERVICE_CONNECTION_STRING=%s\n", info.ServiceConnectionString)
		for _, d := range info.Devices {
			fmt.Fprintf(stdout, "IOTHUB_DEVICE_CONNECTION_STRING=%s\n", d.ConnectionString)
		}
	}
	if h.UI != nil {
		fmt.Fprintf(stderr, "dashboard: %s\n", h.UI.LoginURL(dashboardBase(cfg.host, addrs[2])))
	}
	if cfg.printEvents {
		stopPrinting := startEventPrinter(ctx, h.Engine, stdout, cfg.output)
		defer stopPrinting()
	}
	if logger != nil {
		logger.Info("hub listening", "host", cfg.host, "mqtt", addrs[0].String(), "amqp", addrs[1].String(), "https", addrs[2].String())
	}
	<-ctx.Done()
	if logger != nil {
		logger.Info("hub shutting down")
	}
	return h.Close()
}

// loadDeviceCAs reads the --device-ca files into a pool, printing each
// certificate's subject to w. It returns nil when files is empty: then no
// CA is trusted and CA-signed devices are refused, as on a hub with no
// verified CA. Every certificate must be a CA certificate: IoT Hub checks a
// CA-signed device's chain up to an uploaded, verified CA, and a leaf
// cannot be one.
func loadDeviceCAs(files []string, w io.Writer) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("iothub: --device-ca: %w", err)
		}
		n := 0
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("iothub: --device-ca %s: certificate %d: %w", f, n+1, err)
			}
			if !cert.BasicConstraintsValid || !cert.IsCA {
				return nil, fmt.Errorf("iothub: --device-ca %s: certificate %d (%s) is not a CA certificate", f, n+1, cert.Subject)
			}
			pool.AddCert(cert)
			n++
			fmt.Fprintf(w, "trusting device CA %q (expires %s) from %s\n", cert.Subject.String(), cert.NotAfter.UTC().Format(time.DateOnly), f)
		}
		if n == 0 {
			return nil, fmt.Errorf("iothub: --device-ca %s: no PEM certificate found", f)
		}
	}
	return pool, nil
}

// gateway returns "" when clients reach addr under host's standard port, and
// "localhost:PORT" otherwise, for GatewayHostName.
func gateway(host string, addr net.Addr, standardPort string) string {
	_, port, _ := net.SplitHostPort(addr.String())
	if port == standardPort {
		return ""
	}
	if host == "localhost" {
		return "localhost:" + port
	}
	return addr.String()
}

// dashboardBase is the https:// origin of the dashboard's login link:
// "localhost" for a loopback address (the hub's certificate names it), the
// hub's host name otherwise.
func dashboardBase(host string, addr net.Addr) string {
	h, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		h = "localhost"
	} else if ip == nil || ip.IsUnspecified() {
		h = host
	}
	return "https://" + net.JoinHostPort(h, port)
}
