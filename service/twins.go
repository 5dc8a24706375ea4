package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/iothub-go/iothub/internal/twinrules"
)

// Device and module twins: read a twin, update its tags and desired
// properties (PATCH), or replace them (PUT).

// Twin is a device or module twin as the service API returns it: the
// back end's tags, the desired properties it set and the reported
// properties the device sent, with the identity's read-only fields.
//
// Its JSON form (MarshalJSON, UnmarshalJSON) is IoT Hub's, with the
// sections under "properties".
type Twin struct {
	DeviceID string
	ModuleID string // "" for a device twin
	// ETag is the twin's version, which ReplaceTwin sends as its If-Match
	// unless UpdateOptions.IfMatch says otherwise. It is not the identity's
	// etag (that is DeviceETag).
	ETag string
	// DeviceETag is the etag of the device or module identity.
	DeviceETag string
	// Version is the twin's version: every change of its tags or
	// properties adds one.
	Version int64
	// Status, StatusReason and StatusUpdatedTime are the device's (a
	// module twin shows its device's status).
	Status            DeviceStatus
	StatusReason      string
	StatusUpdatedTime time.Time
	// ConnectionState is the hub's view of the identity's connection.
	ConnectionState           DeviceConnectionState
	LastActivityTime          time.Time
	CloudToDeviceMessageCount int
	AuthenticationType        AuthenticationType
	X509Thumbprint            X509Thumbprint
	// ModelID is the Plug and Play model id (DTMI) the device announced
	// when it connected; "" when none.
	ModelID string
	// Capabilities, DeviceScope and ParentScopes are the device's (zero
	// for a module twin).
	Capabilities DeviceCapabilities
	DeviceScope  string
	ParentScopes []string
	// Tags maps each top-level tag to its JSON value (decode it with
	// json.Unmarshal). Devices never see tags.
	Tags map[string]json.RawMessage
	// Desired are the desired properties: set by the back end, read by the
	// device.
	Desired TwinProperties
	// Reported are the reported properties: set by the device, read by
	// the back end.
	Reported TwinProperties
}

// TwinProperties is one section of a twin's properties, desired or
// reported, with its version and metadata.
type TwinProperties struct {
	// Version is the section's $version: the hub adds one with every
	// change of the section, so a larger version is newer.
	Version int64
	// Properties maps each top-level property to its JSON value (decode
	// it with json.Unmarshal); numbers keep the hub's text.
	Properties map[string]json.RawMessage
	// Metadata is the section's $metadata as the hub sent it: for the
	// section and for every property, $lastUpdated (and, for desired
	// properties, $lastUpdatedVersion). nil when the hub sent none.
	Metadata json.RawMessage
}

// TwinPatch is a change of a twin's tags and desired properties for
// UpdateTwin, merged as a JSON merge patch: each member replaces the
// property of that name, an object value is merged into the property's
// current object, and a nil value deletes the property. Values are encoded
// with encoding/json (a json.RawMessage is sent as it is). A nil map leaves
// its section unchanged.
//
// Reported properties are the device's: the service cannot change them.
type TwinPatch struct {
	Tags    map[string]any
	Desired map[string]any
}

// UpdateTwinOptions are the optional parameters of UpdateTwin and
// UpdateModuleTwin. A nil *UpdateTwinOptions gives the defaults.
type UpdateTwinOptions struct {
	// IfMatch is the etag the twin must still have for the patch to be
	// applied; a newer version makes the call fail with
	// ErrPreconditionFailed:
	//   - "" (the default) and "*" mean whatever its version: a patch
	//     changes only the properties it names.
	//   - Any other value is that etag (Twin.ETag), quoted or not.
	IfMatch string
}

// maxTwinBody bounds the body of a twin answer: 8 KB of tags and 32 KB
// of each property section, with the per-property $metadata that can make
// a section about a dozen times larger than its properties, and the
// identity's fields.
const maxTwinBody = 2 << 20

// GetTwin returns a device's twin. An unknown device fails with
// ErrDeviceNotFound. Needs RegistryRead or ServiceConnect.
func (c *Client) GetTwin(ctx context.Context, deviceID string) (*Twin, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.GetTwin")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	var tw *Twin
	tw, err = c.getTwin(ctx, twinPath(deviceID, ""))
	return tw, err
}

// UpdateTwin merges patch into a device twin's tags and desired
// properties and returns the twin as it then is. The hub sends the
// desired-property changes to the device if it is connected and listening
// for them. With opts.IfMatch set, a twin at another version fails with
// ErrPreconditionFailed. Property names and values are checked before
// anything is sent (errors match ErrArgumentInvalid); the hub refuses
// sections over its size limits. An unknown device fails with
// ErrDeviceNotFound. Needs RegistryWrite or ServiceConnect.
func (c *Client) UpdateTwin(ctx context.Context, deviceID string, patch *TwinPatch, opts *UpdateTwinOptions) (*Twin, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.UpdateTwin")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	var tw *Twin
	tw, err = c.updateTwin(ctx, "UpdateTwin", deviceID, "", patch, opts)
	return tw, err
}

// ReplaceTwin replaces a device twin's tags and desired properties with
// twin's, provided the twin is still at the version opts.IfMatch names (by
// default twin.ETag; see UpdateOptions), and returns the twin as it then
// is. Tags or desired properties not in twin are deleted. Only twin's Tags
// and Desired.Properties are sent: its reported properties, versions and
// identity fields are the hub's, so a twin from GetTwin can be changed and
// sent back. twin.DeviceID, when set, must be deviceID. Needs RegistryWrite
// or ServiceConnect.
func (c *Client) ReplaceTwin(ctx context.Context, deviceID string, twin *Twin, opts *UpdateOptions) (*Twin, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.ReplaceTwin")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	var tw *Twin
	tw, err = c.replaceTwin(ctx, "ReplaceTwin", deviceID, "", twin, opts)
	return tw, err
}

// GetModuleTwin returns a module's twin. It fails with ErrDeviceNotFound
// or ErrModuleNotFound when there is no such identity. Needs RegistryRead
// or ServiceConnect.
func (c *Client) GetModuleTwin(ctx context.Context, deviceID, moduleID string) (*Twin, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.GetModuleTwin")
	defer func() { end(err) }()
	if err = checkIDs(deviceID, moduleID); err != nil {
		return nil, err
	}
	var tw *Twin
	tw, err = c.getTwin(ctx, twinPath(deviceID, moduleID))
	return tw, err
}

// UpdateModuleTwin is UpdateTwin for a module twin.
func (c *Client) UpdateModuleTwin(ctx context.Context, deviceID, moduleID string, patch *TwinPatch, opts *UpdateTwinOptions) (*Twin, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.UpdateModuleTwin")
	defer func() { end(err) }()
	if err = checkIDs(deviceID, moduleID); err != nil {
		return nil, err
	}
	var tw *Twin
	tw, err = c.updateTwin(ctx, "UpdateModuleTwin", deviceID, moduleID, patch, opts)
	return tw, err
}

// ReplaceModuleTwin is ReplaceTwin for a module twin; twin.ModuleID, when
// set, must be moduleID.
func (c *Client) ReplaceModuleTwin(ctx context.Context, deviceID, moduleID string, twin *Twin, opts *UpdateOptions) (*Twin, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.ReplaceModuleTwin")
	defer func() { end(err) }()
	if err = checkIDs(deviceID, moduleID); err != nil {
		return nil, err
	}
	var tw *Twin
	tw, err = c.replaceTwin(ctx, "ReplaceModuleTwin", deviceID, moduleID, twin, opts)
	return tw, err
}

func checkIDs(deviceID, moduleID string) error {
	if err := checkID("device", deviceID); err != nil {
		return err
	}
	return checkID("module", moduleID)
}

// twinPath is /twins/{id} or /twins/{id}/modules/{mid}.
func twinPath(deviceID, moduleID string) string {
	p := "/twins/" + pathSegment(deviceID)
	if moduleID != "" {
		p += "/modules/" + pathSegment(moduleID)
	}
	return p
}

func (c *Client) getTwin(ctx context.Context, path string) (*Twin, error) {
	var out Twin
	if err := c.get(withBodyLimit(ctx, maxTwinBody), path, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// updateTwin sends a PATCH; the ids are checked already.
func (c *Client) updateTwin(ctx context.Context, op, deviceID, moduleID string, patch *TwinPatch, opts *UpdateTwinOptions) (*Twin, error) {
	if patch == nil {
		return nil, argErr(op + ": the patch is nil")
	}
	body, err := patch.encode(op)
	if err != nil {
		return nil, err
	}
	etag := etagAny
	if opts != nil && opts.IfMatch != "" {
		etag = opts.IfMatch
	}
	return c.writeTwin(ctx, http.MethodPatch, twinPath(deviceID, moduleID), body, etag)
}

// replaceTwin sends a PUT; the ids are checked already.
func (c *Client) replaceTwin(ctx context.Context, op, deviceID, moduleID string, twin *Twin, opts *UpdateOptions) (*Twin, error) {
	if twin == nil {
		return nil, argErr(op + ": the twin is nil")
	}
	if twin.DeviceID != "" && twin.DeviceID != deviceID {
		return nil, argErr(fmt.Sprintf("%s: the twin's DeviceID %q is not the device id %q", op, clipID(twin.DeviceID), clipID(deviceID)))
	}
	if twin.ModuleID != "" && twin.ModuleID != moduleID {
		return nil, argErr(fmt.Sprintf("%s: the twin's ModuleID %q is not the module id %q", op, clipID(twin.ModuleID), clipID(moduleID)))
	}
	etag, err := updateETag(op, twin.ETag, opts)
	if err != nil {
		return nil, err
	}
	w := twinReplaceWire{DeviceID: deviceID, ModuleID: moduleID, Tags: twin.Tags}
	w.Properties.Desired = twin.Desired.Properties
	if w.Tags == nil {
		w.Tags = map[string]json.RawMessage{}
	}
	if w.Properties.Desired == nil {
		w.Properties.Desired = map[string]json.RawMessage{}
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, &argumentError{msg: fmt.Sprintf("iothub: %s: a tag or desired property is not valid JSON: %v", op, unwrapMarshal(err)), cause: err}
	}
	// Check what the hub will see: the encoded document.
	var doc struct {
		Tags       map[string]any `json:"tags"`
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err := decodeNumbers(body, &doc); err != nil {
		return nil, &argumentError{msg: fmt.Sprintf("iothub: %s: the twin does not encode as a JSON object: %v", op, err), cause: err}
	}
	if err := checkSection(op, "tags", doc.Tags); err != nil {
		return nil, err
	}
	if err := checkSection(op, "desired properties", doc.Properties.Desired); err != nil {
		return nil, err
	}
	return c.writeTwin(ctx, http.MethodPut, twinPath(deviceID, moduleID), body, etag)
}

// writeTwin sends a PATCH or PUT of a twin with If-Match: etag. Like other
// writes it is retried only when the request provably was not dispatched:
// a retried write whose first attempt succeeded would fail with 412.
func (c *Client) writeTwin(ctx context.Context, method, path string, body []byte, etag string) (*Twin, error) {
	rctx := withBodyLimit(policy.WithRetryOptions(ctx, c.writeRetry), maxTwinBody)
	req, err := c.newRequest(rctx, method, path, "")
	if err != nil {
		return nil, err
	}
	req.Raw().Header.Set("If-Match", ifMatch(etag))
	if err := req.SetBody(memBody{bytes.NewReader(body)}, "application/json; charset=utf-8"); err != nil {
		return nil, fmt.Errorf("iothub: building request: %w", err)
	}
	resp, err := c.do(ctx, req, http.StatusOK)
	if err != nil {
		return nil, wrapTransport(err)
	}
	var out Twin
	if err := decodeBody(resp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// twinReplaceWire is the body of a PUT: the twin's identity and the
// sections the back end owns.
type twinReplaceWire struct {
	DeviceID   string                     `json:"deviceId"`
	ModuleID   string                     `json:"moduleId,omitempty"`
	Tags       map[string]json.RawMessage `json:"tags"`
	Properties struct {
		Desired map[string]json.RawMessage `json:"desired"`
	} `json:"properties"`
}

// encode checks the patch and returns its JSON.
func (p *TwinPatch) encode(op string) ([]byte, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, &argumentError{msg: fmt.Sprintf("iothub: %s: the patch does not encode as JSON: %v", op, unwrapMarshal(err)), cause: err}
	}
	var doc struct {
		Tags       map[string]any `json:"tags"`
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err := decodeNumbers(body, &doc); err != nil {
		return nil, &argumentError{msg: fmt.Sprintf("iothub: %s: the patch does not encode as JSON objects: %v", op, err), cause: err}
	}
	if err := checkSection(op, "tags", doc.Tags); err != nil {
		return nil, err
	}
	if err := checkSection(op, "desired properties", doc.Properties.Desired); err != nil {
		return nil, err
	}
	return body, nil
}

// unwrapMarshal drops encoding/json's "json: error calling MarshalJSON
// for type …" wrapping, which names Go types rather than the problem.
func unwrapMarshal(err error) error {
	var me *json.MarshalerError
	if errors.As(err, &me) && me.Unwrap() != nil {
		return me.Unwrap()
	}
	return err
}

// MarshalJSON encodes the patch as the body of PATCH /twins/{id}:
// {"tags":{…},"properties":{"desired":{…}}}, nil sections left out.
func (p TwinPatch) MarshalJSON() ([]byte, error) {
	type desired struct {
		Desired map[string]any `json:"desired"`
	}
	var w struct {
		Tags       map[string]any `json:"tags,omitempty"`
		Properties *desired       `json:"properties,omitempty"`
	}
	w.Tags = p.Tags
	if p.Desired != nil {
		w.Properties = &desired{Desired: p.Desired}
	}
	return json.Marshal(w)
}

// decodeNumbers decodes one JSON value into v, numbers as json.Number.
func decodeNumbers(b []byte, v any) error { return twinrules.Decode(b, v) }

// checkSection applies the hub's key and value rules to the members of a
// tags or desired-properties object.
func checkSection(op, name string, m map[string]any) error {
	if err := twinrules.CheckSection(m); err != nil {
		return argErr(op + ": " + name + ": " + err.Error())
	}
	return nil
}

// --- JSON ---

type twinWire struct {
	DeviceID                  string                     `json:"deviceId"`
	ModuleID                  string                     `json:"moduleId,omitempty"`
	ETag                      string                     `json:"etag,omitempty"`
	DeviceETag                string                     `json:"deviceEtag,omitempty"`
	Status                    string                     `json:"status,omitempty"`
	StatusReason              *string                    `json:"statusReason,omitempty"`
	StatusUpdateTime          string                     `json:"statusUpdateTime,omitempty"`
	ConnectionState           string                     `json:"connectionState,omitempty"`
	LastActivityTime          string                     `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount int                        `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string                     `json:"authenticationType,omitempty"`
	X509Thumbprint            *thumbprintWire            `json:"x509Thumbprint,omitempty"`
	ModelID                   string                     `json:"modelId,omitempty"`
	Version                   int64                      `json:"version,omitempty"`
	Tags                      map[string]json.RawMessage `json:"tags,omitempty"`
	Properties                *twinPropertiesWire        `json:"properties,omitempty"`
	Capabilities              *capabilitiesWire          `json:"capabilities,omitempty"`
	DeviceScope               *string                    `json:"deviceScope,omitempty"`
	ParentScopes              []string                   `json:"parentScopes,omitempty"`
}

type twinPropertiesWire struct {
	Desired  json.RawMessage `json:"desired"`
	Reported json.RawMessage `json:"reported"`
}

// MarshalJSON encodes the twin with IoT Hub's field names.
func (t Twin) MarshalJSON() ([]byte, error) {
	desired, err := t.Desired.wire()
	if err != nil {
		return nil, err
	}
	reported, err := t.Reported.wire()
	if err != nil {
		return nil, err
	}
	w := twinWire{
		DeviceID:                  t.DeviceID,
		ModuleID:                  t.ModuleID,
		ETag:                      t.ETag,
		DeviceETag:                t.DeviceETag,
		Status:                    string(t.Status),
		StatusReason:              optStr(t.StatusReason),
		StatusUpdateTime:          formatTime(t.StatusUpdatedTime),
		ConnectionState:           string(t.ConnectionState),
		LastActivityTime:          formatTime(t.LastActivityTime),
		CloudToDeviceMessageCount: t.CloudToDeviceMessageCount,
		AuthenticationType:        string(t.AuthenticationType),
		X509Thumbprint: &thumbprintWire{
			PrimaryThumbprint:   optStr(t.X509Thumbprint.PrimaryThumbprint),
			SecondaryThumbprint: optStr(t.X509Thumbprint.SecondaryThumbprint),
		},
		ModelID:      t.ModelID,
		Version:      t.Version,
		Tags:         t.Tags,
		Properties:   &twinPropertiesWire{Desired: desired, Reported: reported},
		DeviceScope:  optStr(t.DeviceScope),
		ParentScopes: t.ParentScopes,
	}
	if t.ModuleID == "" {
		w.Capabilities = &capabilitiesWire{IotEdge: t.Capabilities.IoTEdge}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes IoT Hub's twin JSON.
func (t *Twin) UnmarshalJSON(b []byte) error {
	var w twinWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*t = Twin{
		DeviceID:                  w.DeviceID,
		ModuleID:                  w.ModuleID,
		ETag:                      w.ETag,
		DeviceETag:                w.DeviceETag,
		Version:                   w.Version,
		Status:                    DeviceStatus(w.Status),
		StatusReason:              deref(w.StatusReason),
		StatusUpdatedTime:         parseTime(w.StatusUpdateTime),
		ConnectionState:           DeviceConnectionState(w.ConnectionState),
		LastActivityTime:          parseTime(w.LastActivityTime),
		CloudToDeviceMessageCount: w.CloudToDeviceMessageCount,
		AuthenticationType:        AuthenticationType(w.AuthenticationType),
		ModelID:                   w.ModelID,
		DeviceScope:               deref(w.DeviceScope),
		ParentScopes:              w.ParentScopes,
		Tags:                      w.Tags,
	}
	if w.X509Thumbprint != nil {
		t.X509Thumbprint = X509Thumbprint{
			PrimaryThumbprint:   deref(w.X509Thumbprint.PrimaryThumbprint),
			SecondaryThumbprint: deref(w.X509Thumbprint.SecondaryThumbprint),
		}
	}
	if w.Capabilities != nil {
		t.Capabilities.IoTEdge = w.Capabilities.IotEdge
	}
	if w.Properties != nil {
		var err error
		if t.Desired, err = parseTwinSection("desired", w.Properties.Desired); err != nil {
			return err
		}
		if t.Reported, err = parseTwinSection("reported", w.Properties.Reported); err != nil {
			return err
		}
	}
	return nil
}

// parseTwinSection splits a section object into its properties, $version
// and $metadata. An absent or null section is empty.
func parseTwinSection(name string, raw json.RawMessage) (TwinProperties, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return TwinProperties{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return TwinProperties{}, fmt.Errorf("twin properties %s: %w", name, err)
	}
	p := TwinProperties{Properties: make(map[string]json.RawMessage, len(m))}
	for k, v := range m {
		switch k {
		case "$version":
			if err := json.Unmarshal(v, &p.Version); err != nil {
				return TwinProperties{}, fmt.Errorf("twin properties %s: $version is not an integer", name)
			}
		case "$metadata":
			p.Metadata = v
		default:
			if strings.HasPrefix(k, "$") {
				continue // a member of the hub's own; properties never start with '$'
			}
			p.Properties[k] = v
		}
	}
	return p, nil
}

// wire renders a section: its properties, $metadata when set and
// $version when not zero.
func (p TwinProperties) wire() (json.RawMessage, error) {
	m := make(map[string]json.RawMessage, len(p.Properties)+2)
	for k, v := range p.Properties {
		if strings.HasPrefix(k, "$") {
			continue // the hub's own members are the fields below
		}
		m[k] = v
	}
	if len(p.Metadata) > 0 {
		m["$metadata"] = p.Metadata
	}
	if p.Version != 0 {
		v, _ := json.Marshal(p.Version)
		m["$version"] = v
	}
	return json.Marshal(m)
}
