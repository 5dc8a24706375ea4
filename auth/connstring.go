package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ErrInvalidConnectionString is wrapped by every error that
// [ParseDeviceConnectionString] and [ParseServiceConnectionString] return. The
// message of the wrapping error names the offending key and the reason.
var ErrInvalidConnectionString = errors.New("iothub: invalid connection string")

// Identity names one device or module of one hub.
type Identity struct {
	// HostName is the hub's host name, e.g. "myhub.azure-devices.net".
	HostName string
	// DeviceID is the device's registry id (case-sensitive).
	DeviceID string
	// ModuleID is the module's id; "" for a device identity.
	ModuleID string
}

// String returns "deviceID" or "deviceID/moduleID", the form IoT Hub uses
// for MQTT client ids and for a module certificate's common name.
func (id Identity) String() string {
	if id.ModuleID == "" {
		return id.DeviceID
	}
	return id.DeviceID + "/" + id.ModuleID
}

// Resource returns the resource URI (without scheme) that a SAS token for this
// identity signs: "{host}/devices/{deviceID}" or
// "{host}/devices/{deviceID}/modules/{moduleID}".
func (id Identity) Resource() string {
	if id.ModuleID == "" {
		return DeviceResource(id.HostName, id.DeviceID)
	}
	return ModuleResource(id.HostName, id.DeviceID, id.ModuleID)
}

// ConnectionString is a parsed IoT Hub connection string: a device, module or
// service (hub policy) connection string.
//
// String, GoString and %v redact SharedAccessKey and SharedAccessSignature;
// use [ConnectionString.Reveal] to get the full text back.
type ConnectionString struct {
	// HostName is the hub's host name; it is also the SAS audience. Required.
	HostName string
	// GatewayHostName, when set, is the host (optionally "host:port") that
	// clients dial instead of HostName; tokens still name HostName.
	GatewayHostName string
	// DeviceID is set for device and module connection strings.
	DeviceID string
	// ModuleID is set for module connection strings.
	ModuleID string
	// SharedAccessKeyName is the hub policy name ("iothubowner", "service", …)
	// when SharedAccessKey or SharedAccessSignature belongs to a policy.
	SharedAccessKeyName string
	// SharedAccessKey is a base64 symmetric key. Secret.
	SharedAccessKey string
	// SharedAccessSignature is a complete pre-built token
	// ("SharedAccessSignature sr=…"); it cannot be renewed. Secret.
	SharedAccessSignature string
	// X509 reports x509=true: the identity authenticates with a client
	// certificate and the string carries no secret.
	X509 bool
}

// keys in canonical spelling, indexed by their lower-case form.
var connStringKeys = map[string]string{
	"hostname":              "HostName",
	"gatewayhostname":       "GatewayHostName",
	"deviceid":              "DeviceId",
	"moduleid":              "ModuleId",
	"sharedaccesskeyname":   "SharedAccessKeyName",
	"sharedaccesskey":       "SharedAccessKey",
	"sharedaccesssignature": "SharedAccessSignature",
	"x509":                  "x509",
	"x509cert":              "x509", // legacy .NET spelling
}

func connStringError(key, format string, args ...any) error {
	if key == "" {
		return fmt.Errorf("%w: %s", ErrInvalidConnectionString, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalidConnectionString, key, fmt.Sprintf(format, args...))
}

// parseConnectionString splits s into its pairs and checks each value's own
// syntax. Combinations of keys are checked by the callers.
func parseConnectionString(s string) (ConnectionString, map[string]bool, error) {
	var c ConnectionString
	seen := make(map[string]bool)
	s = strings.TrimSpace(s)
	if s == "" {
		return c, nil, connStringError("", "empty")
	}
	for i, seg := range strings.Split(s, ";") {
		if seg == "" {
			continue // tolerate ";;" and a trailing ";"
		}
		k, v, ok := strings.Cut(seg, "=")
		if !ok {
			return c, nil, connStringError("", "part %d has no '=' (want Key=Value)", i+1)
		}
		canon, known := connStringKeys[strings.ToLower(k)]
		if !known {
			// The key is named only when it looks like a key name and its
			// value is more than '=' padding: a base64 key pasted without
			// "SharedAccessKey=" splits at its padding into an
			// alphanumeric "key" and a value of "=" or "", and must not be
			// echoed.
			if looksLikeKeyName(k) && strings.Trim(v, "=") != "" {
				return c, nil, connStringError(k, "unknown key")
			}
			return c, nil, connStringError("", "part %d has an unknown key", i+1)
		}
		if seen[canon] {
			return c, nil, connStringError(canon, "given more than once")
		}
		seen[canon] = true
		if v == "" {
			return c, nil, connStringError(canon, "empty value")
		}
		var err error
		switch canon {
		case "HostName":
			err = checkHostName(v)
			c.HostName = v
		case "GatewayHostName":
			err = checkGatewayHostName(v)
			c.GatewayHostName = v
		case "DeviceId":
			err = CheckID(v)
			c.DeviceID = v
		case "ModuleId":
			err = CheckID(v)
			c.ModuleID = v
		case "SharedAccessKeyName":
			err = checkKeyName(v)
			c.SharedAccessKeyName = v
		case "SharedAccessKey":
			_, err = decodeKey(v)
			c.SharedAccessKey = v
		case "SharedAccessSignature":
			_, err = ParseSAS(v)
			c.SharedAccessSignature = v
		case "x509":
			switch strings.ToLower(v) {
			case "true":
				c.X509 = true
			case "false":
			default:
				err = errors.New(`want "true" or "false"`)
			}
		}
		if err != nil {
			return c, nil, connStringError(canon, "%s", strings.TrimPrefix(err.Error(), "iothub: "))
		}
	}
	if c.HostName == "" {
		return c, nil, connStringError("HostName", "missing")
	}
	return c, seen, nil
}

// ParseDeviceConnectionString parses a device or module connection string:
//
//	HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=<base64>
//	HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;SharedAccessKey=<base64>
//	HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true
//	HostName=…;DeviceId=dev1;SharedAccessSignature=SharedAccessSignature sr=…
//
// Keys match case-insensitively and each pair is split at its first '=', so
// base64 padding and tokens survive. HostName and DeviceId are required, and
// exactly one of SharedAccessKey, SharedAccessSignature or x509=true. A
// SharedAccessSignature must be a well-formed token whose resource covers the
// identity; its expiry is not checked here (see [StaticToken]).
// GatewayHostName may carry a port ("localhost:8883").
func ParseDeviceConnectionString(s string) (ConnectionString, error) {
	c, _, err := parseConnectionString(s)
	if err != nil {
		return ConnectionString{}, err
	}
	if c.DeviceID == "" {
		if c.SharedAccessKeyName != "" {
			return ConnectionString{}, connStringError("DeviceId", "missing (this looks like a service connection string)")
		}
		return ConnectionString{}, connStringError("DeviceId", "missing")
	}
	n := 0
	for _, set := range []bool{c.SharedAccessKey != "", c.SharedAccessSignature != "", c.X509} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return ConnectionString{}, connStringError("", "one of SharedAccessKey, SharedAccessSignature or x509=true is required")
	case n > 1:
		return ConnectionString{}, connStringError("", "only one of SharedAccessKey, SharedAccessSignature or x509=true may be set")
	}
	if c.X509 && c.SharedAccessKeyName != "" {
		return ConnectionString{}, connStringError("SharedAccessKeyName", "not allowed with x509=true")
	}
	if c.SharedAccessSignature != "" {
		tok, _ := ParseSAS(c.SharedAccessSignature) // syntax checked above
		if !tok.covers(c.Identity().Resource()) {
			return ConnectionString{}, connStringError("SharedAccessSignature", "token is for %q, not for %q", tok.Resource, c.Identity().Resource())
		}
		if err := checkTokenKeyName(tok, c.SharedAccessKeyName); err != nil {
			return ConnectionString{}, err
		}
	}
	return c, nil
}

// ParseServiceConnectionString parses a hub-level (policy) connection string:
//
//	HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=<base64>
//	HostName=…;SharedAccessKeyName=service;SharedAccessSignature=SharedAccessSignature sr=…
//
// HostName and SharedAccessKeyName are required, and exactly one of
// SharedAccessKey or SharedAccessSignature. Device-only keys (DeviceId,
// ModuleId, x509) are refused. GatewayHostName ("host:port") is accepted as
// an extension of this SDK: the service client dials it while tokens still
// name HostName, which is how a local hub on a random port is reached.
func ParseServiceConnectionString(s string) (ConnectionString, error) {
	c, seen, err := parseConnectionString(s)
	if err != nil {
		return ConnectionString{}, err
	}
	for _, k := range []string{"DeviceId", "ModuleId", "x509"} {
		if seen[k] {
			return ConnectionString{}, connStringError(k, "not allowed in a service connection string (this looks like a device connection string)")
		}
	}
	if c.SharedAccessKeyName == "" {
		return ConnectionString{}, connStringError("SharedAccessKeyName", "missing")
	}
	switch {
	case c.SharedAccessKey == "" && c.SharedAccessSignature == "":
		return ConnectionString{}, connStringError("", "one of SharedAccessKey or SharedAccessSignature is required")
	case c.SharedAccessKey != "" && c.SharedAccessSignature != "":
		return ConnectionString{}, connStringError("", "only one of SharedAccessKey or SharedAccessSignature may be set")
	}
	if c.SharedAccessSignature != "" {
		tok, _ := ParseSAS(c.SharedAccessSignature)
		if !tok.covers(c.HostName) {
			return ConnectionString{}, connStringError("SharedAccessSignature", "token is for %q, not for hub %q", tok.Resource, c.HostName)
		}
		if err := checkTokenKeyName(tok, c.SharedAccessKeyName); err != nil {
			return ConnectionString{}, err
		}
	}
	return c, nil
}

func checkTokenKeyName(tok *SAS, keyName string) error {
	if keyName != "" && tok.KeyName != "" && tok.KeyName != keyName {
		return connStringError("SharedAccessSignature", "token is signed by policy %q, not %q", tok.KeyName, keyName)
	}
	if keyName != "" && tok.KeyName == "" {
		return connStringError("SharedAccessSignature", "token has no skn but SharedAccessKeyName is %q", keyName)
	}
	return nil
}

// Identity returns the device or module identity the connection string names.
func (c ConnectionString) Identity() Identity {
	return Identity{HostName: c.HostName, DeviceID: c.DeviceID, ModuleID: c.ModuleID}
}

// Address returns the host (and port, if given) that clients dial:
// GatewayHostName when set, else HostName.
func (c ConnectionString) Address() string {
	if c.GatewayHostName != "" {
		return c.GatewayHostName
	}
	return c.HostName
}

// String returns the connection string with SharedAccessKey and
// SharedAccessSignature replaced by "<redacted>".
func (c ConnectionString) String() string { return c.format(true) }

// GoString redacts like String, so %#v is safe too.
func (c ConnectionString) GoString() string {
	return "auth.ConnectionString(" + strconv.Quote(c.format(true)) + ")"
}

// Reveal returns the full connection string, secrets included, in canonical
// key spelling and order. Do not log it.
func (c ConnectionString) Reveal() string { return c.format(false) }

func (c ConnectionString) format(redact bool) string {
	var b strings.Builder
	add := func(k, v string, secret bool) {
		if v == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		if secret && redact {
			v = "<redacted>"
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
	}
	add("HostName", c.HostName, false)
	add("DeviceId", c.DeviceID, false)
	add("ModuleId", c.ModuleID, false)
	add("SharedAccessKeyName", c.SharedAccessKeyName, false)
	add("SharedAccessKey", c.SharedAccessKey, true)
	add("SharedAccessSignature", c.SharedAccessSignature, true)
	if c.X509 {
		add("x509", "true", false)
	}
	add("GatewayHostName", c.GatewayHostName, false)
	return b.String()
}

// TokenProvider returns the provider that authenticates this connection
// string: a renewing [KeyTokenProvider] for a SharedAccessKey, or a
// [StaticToken] for a SharedAccessSignature. Device and module strings sign
// their identity's resource (with skn when SharedAccessKeyName is set);
// service strings sign the hub. An x509=true string has no token provider.
func (c ConnectionString) TokenProvider(opts *TokenOptions) (TokenProvider, error) {
	switch {
	// Check each constructor's error before converting its pointer to the
	// interface: a nil *T in a TokenProvider is not a nil TokenProvider.
	case c.SharedAccessSignature != "":
		p, err := NewStaticToken(c.SharedAccessSignature)
		if err != nil {
			return nil, err
		}
		return p, nil
	case c.SharedAccessKey != "":
		resource := c.HostName
		if c.DeviceID != "" {
			resource = c.Identity().Resource()
		}
		p, err := NewKeyTokenProvider(resource, c.SharedAccessKeyName, c.SharedAccessKey, opts)
		if err != nil {
			return nil, err
		}
		return p, nil
	case c.X509:
		return nil, errors.New("iothub: x509=true connection string authenticates with a certificate, not a token")
	default:
		return nil, errors.New("iothub: connection string has no SharedAccessKey or SharedAccessSignature")
	}
}

// CheckID reports whether s is a valid device or module id for the IoT Hub
// registry: 1–128 characters, ASCII letters and digits, and any of
// - . + % _ # * ? ! ( ) , = @ $ ' :
func CheckID(s string) error {
	if s == "" {
		return errors.New("iothub: empty id")
	}
	if len(s) > 128 {
		return fmt.Errorf("iothub: id is %d characters long, the limit is 128", len(s))
	}
	for i := 0; i < len(s); i++ {
		if !isIDChar(s[i]) {
			return fmt.Errorf("iothub: id has a character not allowed at position %d (%q)", i+1, printable(s[i]))
		}
	}
	return nil
}

func isIDChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("-:.+%_#*?!(),=@$'", c) >= 0
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// printable returns c quoted for an error message, without echoing control
// or non-ASCII bytes.
func printable(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return string(c)
	}
	return fmt.Sprintf("\\x%02x", c)
}

func looksLikeKeyName(k string) bool {
	if k == "" || len(k) > 32 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isAlnum(k[i]) {
			return false
		}
	}
	return true
}

func checkHostName(h string) error {
	if len(h) > 255 {
		return errors.New("longer than 255 characters")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			if c == ':' {
				return errors.New("must not carry a port (use GatewayHostName=host:port)")
			}
			return fmt.Errorf("character %q not allowed at position %d", printable(c), i+1)
		}
	}
	if h[0] == '.' {
		return errors.New("hub name (the part before the first '.') is empty")
	}
	return nil
}

func checkGatewayHostName(v string) error {
	host := v
	if strings.HasPrefix(v, "[") || strings.Count(v, ":") == 1 {
		h, port, err := net.SplitHostPort(v)
		if err != nil {
			return errors.New("want host or host:port")
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return errors.New("port must be a number from 1 to 65535")
		}
		host = h
	}
	if ip := net.ParseIP(host); ip != nil {
		return nil
	}
	if host == "" {
		return errors.New("empty host")
	}
	return checkHostName(host)
}

func checkKeyName(v string) error {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isAlnum(c) && strings.IndexByte("_-@.", c) < 0 {
			return fmt.Errorf("character %q not allowed at position %d", printable(c), i+1)
		}
	}
	return nil
}

// decodeKey decodes a base64 shared access key.
func decodeKey(k string) ([]byte, error) {
	// encoding/base64 skips '\r' and '\n'; a key must not contain them (a
	// connection string's trailing newline is trimmed, so such a key would
	// not survive Reveal and re-parsing).
	if strings.ContainsAny(k, "\r\n") {
		return nil, errors.New("iothub: key is not valid base64")
	}
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return nil, errors.New("iothub: key is not valid base64")
	}
	if len(b) == 0 {
		return nil, errors.New("iothub: key is empty")
	}
	return b, nil
}
