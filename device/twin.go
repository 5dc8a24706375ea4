package device

// Device twins: read the twin, report properties, receive desired ones.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"

	"github.com/iothub-go/iothub/internal/twinrules"
)

// Twin is the device's view of its twin: the desired properties the
// back-end set and the reported properties the device sent. Tags are the
// back-end's and are not shown to devices.
type Twin struct {
	Desired  TwinProperties
	Reported TwinProperties
}

// TwinProperties is a set of twin properties: a whole section (desired or
// reported) or a patch of one.
type TwinProperties struct {
	// Version is the section's $version: the hub adds one with every
	// change of the section, so a larger version is newer.
	Version int64
	// Properties maps each top-level property to its JSON value (decode
	// it with json.Unmarshal). In a patch, the value null means the
	// property was deleted, and an object value is merged into the
	// property's current value (JSON merge patch), members with null
	// deleted.
	Properties map[string]json.RawMessage
}

// DesiredPropertiesHandler receives desired-property changes; see
// Client.SetDesiredPropertiesHandler. ctx ends when Close gives up
// waiting for the handler.
type DesiredPropertiesHandler func(ctx context.Context, patch TwinProperties)

// Twin document limits the client checks before it sends a patch, as the
// hub does (IoT Hub device twin guide: "Tags and properties format",
// "Twin size").
const (
	// MaxReportedSize is the largest reported section: 32 KB as IoT Hub
	// counts it (the bytes of keys and string values, 8 per number, 4 per
	// boolean; $version and metadata not counted).
	MaxReportedSize = 32 * 1024
	// MaxTwinDepth is how deeply objects may nest below a property.
	MaxTwinDepth = twinrules.MaxDepth
)

// ErrInvalidPatch is wrapped by UpdateReportedProperties' error when the
// patch breaks a twin rule the hub enforces: a property name that is
// empty, longer than 1 KB, or contains '.', '$', a space or a control
// character; objects nested deeper than MaxTwinDepth; a string over 4 KB; a
// null inside an array; a value that is not JSON; or a patch larger than
// MaxReportedSize. Nothing is sent. The hub's own refusals are
// *transport.HubError values: status 400 for a patch that breaks the
// rules, 403 when the reported properties would grow beyond 32 KB.
var ErrInvalidPatch = errors.New("iothub: invalid twin patch")

// GetTwin reads the twin, desired and reported properties with their
// versions. While the client is reconnecting it waits for the connection,
// as long as ctx allows. Over HTTPS it returns an error wrapping
// ErrUnsupported. The hub's refusals wrap *transport.HubError.
func (c *Client) GetTwin(ctx context.Context) (*Twin, error) {
	if err := c.tr.TwinSupport(); err != nil {
		return nil, err
	}
	cn, err := c.liveConn(ctx)
	if err != nil {
		return nil, err
	}
	b, err := cn.GetTwin(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	desired, reported, err := parseDeviceTwin(b)
	if err != nil {
		return nil, err
	}
	return &Twin{Desired: toProperties(desired), Reported: toProperties(reported)}, nil
}

// UpdateReportedProperties merges patch into the twin's reported
// properties and returns their new version. A nil value deletes a
// property; a map value is merged into the property's current value.
// Values are encoded with encoding/json. The patch is checked before it is
// sent (see ErrInvalidPatch). While the client is reconnecting it waits for
// the connection, as long as ctx allows. Over HTTPS it returns an error
// wrapping ErrUnsupported.
//
// Concurrent updates are each applied whole, in the order the hub
// receives them; the versions they return say which came last.
func (c *Client) UpdateReportedProperties(ctx context.Context, patch map[string]any) (int64, error) {
	if err := c.tr.TwinSupport(); err != nil {
		return 0, err
	}
	body, err := encodePatch(patch)
	if err != nil {
		return 0, err
	}
	cn, err := c.liveConn(ctx)
	if err != nil {
		return 0, err
	}
	v, err := cn.UpdateReported(ctx, body)
	if err != nil && ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return v, err
}

// liveConn returns the connection once the client is connected, waiting
// while it reconnects.
func (c *Client) liveConn(ctx context.Context) (*connection, error) {
	for {
		c.mu.Lock()
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		state, conn, changed, closed, running := c.state, c.conn, c.changed, c.closed, c.running
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case state == ConnectionStateConnected && conn != nil:
			return conn, nil
		case !running:
			return nil, ErrNotConnected
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// encodePatch checks and encodes a reported-properties patch.
func encodePatch(patch map[string]any) ([]byte, error) {
	if patch == nil {
		return nil, fmt.Errorf("%w: the patch is nil", ErrInvalidPatch)
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPatch, err)
	}
	if len(b) > maxPatchJSON {
		return nil, fmt.Errorf("%w: the patch is %d bytes of JSON, more than a twin request may carry (%d)", ErrInvalidPatch, len(b), maxPatchJSON)
	}
	// Check the JSON the hub will see, whatever Go types made it.
	v, err := decodeJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPatch, err)
	}
	m := v.(map[string]any)
	if err := twinrules.CheckSection(m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPatch, err)
	}
	// What the patch sets stays in the reported properties, so a patch
	// whose values alone exceed the limit can never be accepted.
	if n := twinrules.Size(m); n > MaxReportedSize {
		return nil, fmt.Errorf("%w: the patch sets %d bytes of properties (keys and values, as IoT Hub counts them); reported properties are limited to %d", ErrInvalidPatch, n, MaxReportedSize)
	}
	return b, nil
}

// maxPatchJSON bounds a patch's JSON: the largest message the MQTT and
// AMQP transports carry.
const maxPatchJSON = 256 * 1024

// clip shortens an id echoed in an error.
func clip(s string) string { return twinrules.Clip(s) }

// decodeJSON decodes one JSON value, numbers as json.Number.
func decodeJSON(b []byte) (any, error) {
	var v any
	if err := twinrules.Decode(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// section is a decoded twin section: properties and $version.
type section struct {
	version int64
	props   map[string]any
}

// parseSection splits a section object into its properties and $version
// ($metadata, if any, is dropped).
func parseSection(v any) (section, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return section{}, errors.New("a twin section is not a JSON object")
	}
	s := section{props: map[string]any{}}
	for k, x := range m {
		switch k {
		case "$version":
			n, ok := x.(json.Number)
			if !ok {
				return section{}, errors.New("$version is not a number")
			}
			ver, err := n.Int64()
			if err != nil {
				return section{}, errors.New("$version is not an integer")
			}
			s.version = ver
		case "$metadata":
		default:
			s.props[k] = x
		}
	}
	return s, nil
}

// parseDeviceTwin parses the hub's answer to a twin GET.
func parseDeviceTwin(b []byte) (desired, reported section, err error) {
	v, err := decodeJSON(b)
	if err != nil {
		return section{}, section{}, fmt.Errorf("iothub: the hub's twin is not JSON: %v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return section{}, section{}, errors.New("iothub: the hub's twin is not a JSON object")
	}
	if desired, err = parseSection(orEmpty(m["desired"])); err != nil {
		return section{}, section{}, fmt.Errorf("iothub: the hub's twin: desired: %v", err)
	}
	if reported, err = parseSection(orEmpty(m["reported"])); err != nil {
		return section{}, section{}, fmt.Errorf("iothub: the hub's twin: reported: %v", err)
	}
	return desired, reported, nil
}

func orEmpty(v any) any {
	if v == nil {
		return map[string]any{}
	}
	return v
}

// toProperties renders a section for the user.
func toProperties(s section) TwinProperties {
	p := TwinProperties{Version: s.version, Properties: make(map[string]json.RawMessage, len(s.props))}
	for k, v := range s.props {
		b, err := json.Marshal(v)
		if err != nil {
			continue // decoded JSON always encodes
		}
		p.Properties[k] = b
	}
	return p
}

// mergePatch applies a JSON merge patch to doc (in place) and returns it.
func mergePatch(doc, patch map[string]any) map[string]any {
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(doc, k)
		case map[string]any:
			cur, ok := doc[k].(map[string]any)
			if !ok {
				cur = map[string]any{}
			}
			doc[k] = mergePatch(cur, v)
		default:
			doc[k] = v
		}
	}
	return doc
}

// diffDocs returns the merge patch that turns old into new: changed and
// added members, null for removed ones, objects diffed member by member.
func diffDocs(old, new map[string]any) map[string]any {
	out := map[string]any{}
	for k, nv := range new {
		ov, ok := old[k]
		if !ok {
			out[k] = nv
			continue
		}
		om, oObj := ov.(map[string]any)
		nm, nObj := nv.(map[string]any)
		if oObj && nObj {
			if d := diffDocs(om, nm); len(d) > 0 {
				out[k] = d
			}
			continue
		}
		if !reflect.DeepEqual(ov, nv) {
			out[k] = nv
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			out[k] = nil
		}
	}
	return out
}

// dtmiPattern is a Digital Twins Model Identifier (DTDL v2/v3):
// dtmi:<segment>(:<segment>)*;<version>, the version n or, in DTDL v3,
// n.m.
var dtmiPattern = regexp.MustCompile(`^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}(?:\.[0-9]{1,6})?$`)

// checkModelID validates ClientOptions.ModelID.
func checkModelID(id string) error {
	if id == "" {
		return nil
	}
	if len(id) > 2048 || !dtmiPattern.MatchString(id) {
		return invalidOptions("ModelID %q is not a DTMI such as dtmi:com:example:Thermostat;1", clip(id))
	}
	return nil
}
