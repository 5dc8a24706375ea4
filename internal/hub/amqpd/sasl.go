package amqpd

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
)

// SASL (AMQP 1.0 part 5.3) as IoT Hub clients use it: MSSBCBS (the C
// SDK) and ANONYMOUS, both followed by CBS, and PLAIN with a SAS token as
// the password. No EXTERNAL: X.509 clients skip SASL.

// saslMechanisms are offered in this order.
var saslMechanisms = []Symbol{"MSSBCBS", "ANONYMOUS", "PLAIN"}

// SASL outcome codes.
const (
	saslOK      = 0
	saslAuth    = 1
	saslSysPerm = 3
)

// plainAuth is the credential of a SASL PLAIN connection.
type plainAuth struct {
	policy bool          // a hub policy token ({policy}@sas.root.{hub})
	id     auth.Identity // the device or module ({id}@sas.{hub})
	token  string
	expiry time.Time
}

func (c *conn) saslExchange() error {
	c.wbuf, _ = appendFrame(c.wbuf, frameTypeSASL, 0, performative(descSASLMechanisms, saslMechanisms), nil)
	if err := c.flush(); err != nil {
		return err
	}
	f, err := readFrame(c.br, MaxFrameSize)
	if err != nil {
		if errors.Is(err, errDecode) || errors.Is(err, errFraming) {
			c.saslOutcome(saslSysPerm, trimErr(err))
		}
		return fmt.Errorf("iothub: SASL: %w", err)
	}
	init, ok := f.body.(*saslInit)
	if !ok || f.typ != frameTypeSASL {
		c.saslOutcome(saslSysPerm, "expected sasl-init")
		return errors.New("iothub: SASL: the first frame is not a sasl-init")
	}
	mech := strings.ToUpper(string(init.mechanism))
	switch mech {
	case "ANONYMOUS", "MSSBCBS":
	case "PLAIN":
		user, pass, err := splitPlain(init.initialResponse)
		if err == nil {
			c.plain, err = c.plainLogin(user, pass)
		}
		if err != nil {
			c.log.Info("amqp SASL PLAIN refused", "username", user, "reason", trimErr(err))
			c.saslOutcome(saslAuth, trimErr(err))
			return fmt.Errorf("iothub: SASL PLAIN refused: %s", trimErr(err))
		}
		c.log.Debug("amqp SASL PLAIN accepted", "username", user)
	default:
		c.saslOutcome(saslAuth, "unsupported SASL mechanism")
		return fmt.Errorf("iothub: SASL: unsupported mechanism %q", init.mechanism)
	}
	c.saslOutcome(saslOK, "")
	return c.flush()
}

// saslOutcome sends a sasl-outcome; the additional data says why a
// refusal happened (never a secret).
func (c *conn) saslOutcome(code uint8, why string) {
	var data any
	if why != "" {
		data = []byte(why)
	}
	c.wbuf, _ = appendFrame(c.wbuf, frameTypeSASL, 0, performative(descSASLOutcome, code, data), nil)
	if code != saslOK {
		_ = c.flush()
	}
}

// splitPlain splits a PLAIN response: [authzid] NUL authcid NUL passwd.
func splitPlain(b []byte) (string, string, error) {
	parts := bytes.Split(b, []byte{0})
	if len(parts) != 3 {
		return "", "", errors.New("iothub: malformed PLAIN response")
	}
	return string(parts[1]), string(parts[2]), nil
}

// plainLogin checks a PLAIN username and token: "{deviceId}@sas.{hub}"
// or "{deviceId}/modules/{moduleId}@sas.{hub}" with the identity's token,
// or "{policy}@sas.root.{hub}" with a token of a hub policy that has
// DeviceConnect (the identities come from the link addresses).
func (c *conn) plainLogin(user, pass string) (*plainAuth, error) {
	e := c.s.e
	host := e.HostName()
	hub, _, _ := strings.Cut(host, ".")
	at := strings.LastIndexByte(user, '@')
	if at < 0 {
		return nil, errors.New("iothub: the username must be {deviceId}@sas.{hub} or {policy}@sas.root.{hub}")
	}
	left, right := user[:at], user[at+1:]
	policy := false
	switch {
	case len(right) > 9 && equalFold(right[:9], "sas.root."):
		policy, right = true, right[9:]
	case len(right) > 4 && equalFold(right[:4], "sas."):
		right = right[4:]
	default:
		return nil, errors.New("iothub: the username must be {deviceId}@sas.{hub} or {policy}@sas.root.{hub}")
	}
	if !equalFold(right, hub) {
		return nil, fmt.Errorf("iothub: the username names hub %q, this is %q", right, hub)
	}
	if policy {
		exp, herr := e.AuthenticateHubPolicy(left, pass)
		if herr != nil {
			return nil, herr
		}
		return &plainAuth{policy: true, token: pass, expiry: exp}, nil
	}
	dev, mod, _ := strings.Cut(left, "/modules/")
	var err error
	if dev, err = url.PathUnescape(dev); err != nil || dev == "" {
		return nil, errors.New("iothub: the username does not name a device")
	}
	if mod, err = url.PathUnescape(mod); err != nil {
		return nil, errors.New("iothub: the username does not name a module")
	}
	id := auth.Identity{HostName: host, DeviceID: dev, ModuleID: mod}
	exp, herr := e.AuthenticateSAS(id, pass)
	if herr != nil {
		return nil, herr
	}
	return &plainAuth{id: id, token: pass, expiry: exp}, nil
}
