package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
)

// The identity registry: create, read, update, delete and list devices and
// their modules. The types are in registry_types.go, their JSON in
// registry_wire.go.

// UpdateOptions are the optional parameters of UpdateDevice,
// UpdateModule, ReplaceTwin and ReplaceModuleTwin. A nil *UpdateOptions
// gives the defaults.
type UpdateOptions struct {
	// IfMatch is the etag the identity (or twin) must still have for the
	// update to be made; a newer version makes the call fail with
	// ErrPreconditionFailed:
	//   - "" (the default) means the ETag of the Device, Module or Twin
	//     passed, as Get or Create returned it, so that a get-modify-update
	//     never overwrites a concurrent change. When that ETag is empty too,
	//     the call fails with ErrArgumentInvalid and nothing is sent (as
	//     .NET's UpdateDeviceAsync(device) does).
	//   - "*" means whatever the current version (.NET's forceUpdate).
	//   - Any other value is that etag, quoted or not.
	IfMatch string
}

// DeleteOptions are the optional parameters of DeleteDevice and
// DeleteModule. A nil *DeleteOptions gives the defaults.
type DeleteOptions struct {
	// IfMatch is the etag the identity must still have for it to be
	// deleted; a newer version makes the call fail with
	// ErrPreconditionFailed:
	//   - "" (the default) and "*" mean whatever its version, as .NET's
	//     RemoveDeviceAsync(deviceId) and the Node SDK's delete(deviceId) do.
	//   - Any other value is that etag (the ETag of a Device or Module
	//     from the registry), quoted or not.
	IfMatch string
}

// Etags travel in If-Match quoted, as the .NET and Node SDKs send them,
// "*" included ("\"*\""), which IoT Hub takes as the wildcard.
const etagAny = "*"

// ifMatch returns the If-Match header for an etag: quoted unless it
// already is.
func ifMatch(etag string) string {
	if strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, `W/"`) {
		return etag
	}
	return `"` + etag + `"`
}

// updateETag picks the etag an update sends.
func updateETag(op, current string, opts *UpdateOptions) (string, error) {
	switch {
	case opts != nil && opts.IfMatch != "":
		return opts.IfMatch, nil
	case current != "":
		return current, nil
	}
	return "", argErr(op + ` needs the identity's ETag (from a Get or Create), or UpdateOptions.IfMatch "*" to replace whatever version it has`)
}

// deleteETag picks the etag a delete sends.
func deleteETag(opts *DeleteOptions) string {
	if opts == nil || opts.IfMatch == "" {
		return etagAny
	}
	return opts.IfMatch
}

// --- devices ---

// CreateDevice registers a new device and returns it as the hub stored it
// (with its ETag and, for SAS devices, its keys). An empty
// Authentication makes a SAS device with generated keys. A device with the
// same id fails with ErrDeviceAlreadyExists. Needs RegistryWrite.
func (c *Client) CreateDevice(ctx context.Context, d *Device) (*Device, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.CreateDevice")
	defer func() { end(err) }()
	if err = checkDevice("CreateDevice", d); err != nil {
		return nil, err
	}
	var out Device
	if err = c.put(ctx, devicePath(d.DeviceID), d, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetDevice returns a device, keys included. An unknown id fails with
// ErrDeviceNotFound. Needs RegistryRead.
func (c *Client) GetDevice(ctx context.Context, deviceID string) (*Device, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.GetDevice")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	var out Device
	if err = c.get(ctx, devicePath(deviceID), "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateDevice replaces a device's status, credentials, capabilities and
// scopes, provided it is still at the version opts.IfMatch names (by
// default d.ETag; see UpdateOptions), and returns it with its new ETag. A
// newer version fails with ErrPreconditionFailed. The hub disconnects the
// device when its credentials or status change. Needs RegistryWrite.
func (c *Client) UpdateDevice(ctx context.Context, d *Device, opts *UpdateOptions) (*Device, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.UpdateDevice")
	defer func() { end(err) }()
	if err = checkDevice("UpdateDevice", d); err != nil {
		return nil, err
	}
	etag, err := updateETag("UpdateDevice", d.ETag, opts)
	if err != nil {
		return nil, err
	}
	var out Device
	if err = c.put(ctx, devicePath(d.DeviceID), d, etag, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteDevice deletes a device and its modules: whatever its version
// when opts is nil, else only if it is still at the version opts.IfMatch
// names (see DeleteOptions), failing with ErrPreconditionFailed otherwise.
// An unknown id fails with ErrDeviceNotFound. Needs RegistryWrite.
func (c *Client) DeleteDevice(ctx context.Context, deviceID string, opts *DeleteOptions) error {
	var err error
	ctx, end := c.startSpan(ctx, "Client.DeleteDevice")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return err
	}
	err = c.del(ctx, devicePath(deviceID), deleteETag(opts))
	return err
}

// --- modules ---

// CreateModule registers a new module on an existing device and returns
// it as the hub stored it. An empty Authentication makes a SAS module
// with generated keys. Fails with ErrModuleAlreadyExists if it exists, or
// ErrDeviceNotFound without the device. Needs RegistryWrite.
func (c *Client) CreateModule(ctx context.Context, m *Module) (*Module, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.CreateModule")
	defer func() { end(err) }()
	if err = checkModule("CreateModule", m); err != nil {
		return nil, err
	}
	var out Module
	if err = c.put(ctx, modulePath(m.DeviceID, m.ModuleID), m, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetModule returns a module, keys included; ErrModuleNotFound if there is
// none. Needs RegistryRead.
func (c *Client) GetModule(ctx context.Context, deviceID, moduleID string) (*Module, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.GetModule")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	if err = checkID("module", moduleID); err != nil {
		return nil, err
	}
	var out Module
	if err = c.get(ctx, modulePath(deviceID, moduleID), "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateModule replaces a module's credentials and ManagedBy, with the
// same version rules as UpdateDevice. Needs RegistryWrite.
func (c *Client) UpdateModule(ctx context.Context, m *Module, opts *UpdateOptions) (*Module, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.UpdateModule")
	defer func() { end(err) }()
	if err = checkModule("UpdateModule", m); err != nil {
		return nil, err
	}
	etag, err := updateETag("UpdateModule", m.ETag, opts)
	if err != nil {
		return nil, err
	}
	var out Module
	if err = c.put(ctx, modulePath(m.DeviceID, m.ModuleID), m, etag, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteModule deletes a module, with the same version rules as
// DeleteDevice. An unknown module fails with ErrModuleNotFound. Needs
// RegistryWrite.
func (c *Client) DeleteModule(ctx context.Context, deviceID, moduleID string, opts *DeleteOptions) error {
	var err error
	ctx, end := c.startSpan(ctx, "Client.DeleteModule")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return err
	}
	if err = checkID("module", moduleID); err != nil {
		return err
	}
	err = c.del(ctx, modulePath(deviceID, moduleID), deleteETag(opts))
	return err
}

// ListModules returns a device's modules. Needs RegistryRead.
func (c *Client) ListModules(ctx context.Context, deviceID string) ([]*Module, error) {
	var err error
	ctx, end := c.startSpan(ctx, "Client.ListModules")
	defer func() { end(err) }()
	if err = checkID("device", deviceID); err != nil {
		return nil, err
	}
	var out []*Module
	if err = c.get(withBodyLimit(ctx, maxListBody), devicePath(deviceID)+"/modules", "", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// --- requests ---

func devicePath(id string) string { return "/devices/" + pathSegment(id) }

func modulePath(deviceID, moduleID string) string {
	return "/devices/" + pathSegment(deviceID) + "/modules/" + pathSegment(moduleID)
}

// put sends a registry document, with If-Match: etag unless etag is ""
// (a create). Writes are retried like invocations: only when the request
// provably was not dispatched, since a retried create or etag-checked
// update whose first attempt succeeded would fail with 409 or 412.
func (c *Client) put(ctx context.Context, path string, doc any, etag string, out any) error {
	body, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("iothub: encoding the registry document: %w", err)
	}
	req, err := c.newRequest(policy.WithRetryOptions(ctx, c.writeRetry), http.MethodPut, path, "")
	if err != nil {
		return err
	}
	if etag != "" {
		req.Raw().Header.Set("If-Match", ifMatch(etag))
	}
	if err := req.SetBody(streaming.NopCloser(bytes.NewReader(body)), "application/json; charset=utf-8"); err != nil {
		return fmt.Errorf("iothub: building request: %w", err)
	}
	resp, err := c.do(ctx, req, http.StatusOK, http.StatusCreated)
	if err != nil {
		return wrapTransport(err)
	}
	return decodeBody(resp, out)
}

// get reads a registry document, with azcore's retries.
func (c *Client) get(ctx context.Context, path, query string, out any) error {
	req, err := c.newRequest(ctx, http.MethodGet, path, query)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, req, http.StatusOK)
	if err != nil {
		return wrapTransport(err)
	}
	return decodeBody(resp, out)
}

// del deletes a registry identity, with If-Match: etag.
func (c *Client) del(ctx context.Context, path, etag string) error {
	req, err := c.newRequest(policy.WithRetryOptions(ctx, c.writeRetry), http.MethodDelete, path, "")
	if err != nil {
		return err
	}
	req.Raw().Header.Set("If-Match", ifMatch(etag))
	_, err = c.do(ctx, req, http.StatusNoContent, http.StatusOK)
	return wrapTransport(err)
}

// wrapTransport gives transport errors the package's prefix; hub errors,
// context errors and nil pass through.
func wrapTransport(err error) error {
	switch err.(type) {
	case nil, *ResponseError:
		return err
	}
	if err == context.Canceled || err == context.DeadlineExceeded {
		return err
	}
	if strings.HasPrefix(err.Error(), "iothub: ") {
		return err // the client's own (ErrRedirect, an expired SAS, …)
	}
	return fmt.Errorf("iothub: %w", err)
}

// decodeBody decodes a registry document (or a list of them). A body that
// is not one fails with ErrMalformedResponse.
func decodeBody(resp *http.Response, out any) error {
	b, err := runtime.Payload(resp)
	if err != nil {
		return readError(err)
	}
	if err := json.Unmarshal(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), out); err != nil {
		return fmt.Errorf("%w: not the registry JSON the request returns: %w", ErrMalformedResponse, err)
	}
	return nil
}

// readError is the error of reading the body of an answer: the guard's
// own (ErrResponseTooLarge) as is, else the transport's.
func readError(err error) error {
	if gerr := guarded(err); gerr != nil {
		return gerr
	}
	return fmt.Errorf("iothub: reading the hub's answer: %w", err)
}
