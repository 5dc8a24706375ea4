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
	"github.com/iothub-go/iothub/internal/pki"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// hubConfig is the parsed command line of "iothub hub".
type hubConfig struct {
	host       string
	mqttAddr   string
	amqpAddr   string
	httpsAddr  string
	caFile     string
	loadCACert string
	loadCAKey  string
	ownerKey   string
	devices    multiFlag
	deviceCAs  multiFlag
	quiet      bool
	// printEvents prints one line per device-to-cloud message (hub_events.go).
	printEvents bool
}

func parseHubFlags(args []string, stderr io.Writer) (*hubConfig, error) {
	var c hubConfig
	fs := flag.NewFlagSet("iothub hub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.host, "host", "localhost", "the hub's host name (SAS audience; HostName in connection strings)")
	fs.StringVar(&c.mqttAddr, "mqtt-addr", "127.0.0.1:8883", "MQTT over TLS listen address")
	fs.StringVar(&c.amqpAddr, "amqp-addr", "127.0.0.1:5671", "AMQP over TLS listen address")
	fs.StringVar(&c.httpsAddr, "https-addr", "127.0.0.1:443", "HTTPS service API and WebSocket listen address")
	fs.StringVar(&c.caFile, "ca-file", "", "write the hub's CA certificate (PEM) to this file, for clients to trust")
	fs.StringVar(&c.loadCACert, "load-ca-cert", "", "load the hub's CA certificate (PEM) from this file instead of generating one")
	fs.StringVar(&c.loadCAKey, "load-ca-key", "", "load the hub's CA private key (PEM, ECDSA) from this file")
	fs.StringVar(&c.ownerKey, "owner-key", "", "base64 primary key of the iothubowner policy (random if empty)")
	fs.Var(&c.devices, "device", "register a device with this id (repeatable); its connection string is printed")
	fs.Var(&c.deviceCAs, "device-ca", "trust the CA certificate(s) in this PEM file for devices whose authentication type is\ncertificateAuthority, as uploading and verifying a CA does on IoT Hub (repeatable)")
	fs.BoolVar(&c.quiet, "quiet", false, "do not log connections and method calls")
	fs.BoolVar(&c.printEvents, "print-events", false, "print one line per device-to-cloud message to stdout:\nEVENT {deviceId[/moduleId]} {protocol} {properties as JSON} {body as a Go-quoted string, cut at 200 bytes}")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("iothub: unexpected argument %q", fs.Arg(0))
	}
	if (c.loadCACert == "") != (c.loadCAKey == "") {
		return nil, errors.New("iothub: --load-ca-cert and --load-ca-key go together")
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
			return 0
		}
		fmt.Fprintln(stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serveHub(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// serveHub runs the hub until ctx ends.
func serveHub(ctx context.Context, cfg *hubConfig, stdout, stderr io.Writer) error {
	var ca *pki.CA
	if cfg.loadCACert != "" {
		certPEM, err := os.ReadFile(cfg.loadCACert)
		if err != nil {
			return fmt.Errorf("iothub: %w", err)
		}
		keyPEM, err := os.ReadFile(cfg.loadCAKey)
		if err != nil {
			return fmt.Errorf("iothub: %w", err)
		}
		if ca, err = pki.LoadCA(certPEM, keyPEM); err != nil {
			return err
		}
	}
	deviceCAs, err := loadDeviceCAs(cfg.deviceCAs, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if cfg.quiet {
		logger = nil
	}
	h, err := hub.Start(hub.Options{
		HostName:   cfg.host,
		Addrs:      []string{cfg.mqttAddr, cfg.amqpAddr, cfg.httpsAddr},
		CA:         ca,
		TrustedCAs: deviceCAs,
		OwnerKey:   cfg.ownerKey,
		Logger:     logger,
	})
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
	fmt.Fprintf(stdout, "IOTHUB_SERVICE_CONNECTION_STRING=%s\n", svc.Reveal())
	for _, id := range cfg.devices {
		d, herr := h.Engine.PutDevice(id, engine.Device{}, "")
		if herr != nil {
			return herr
		}
		cs := auth.ConnectionString{HostName: cfg.host, DeviceID: id, SharedAccessKey: *d.Authentication.SymmetricKey.PrimaryKey,
			GatewayHostName: gateway(cfg.host, addrs[0], "8883")}
		fmt.Fprintf(stdout, "IOTHUB_DEVICE_CONNECTION_STRING=%s\n", cs.Reveal())
	}
	if cfg.printEvents {
		stopPrinting := startEventPrinter(ctx, h.Engine, stdout)
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
