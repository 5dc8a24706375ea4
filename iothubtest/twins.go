package iothubtest

import (
	"encoding/json"
	"fmt"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// Twin is a device or module twin as a test reads it from the hub: each
// section's properties decoded with encoding/json (objects as
// map[string]any, numbers as float64), without $metadata and $version,
// which are given separately.
type Twin struct {
	// Version counts the twin's changes; ETag changes with each of them.
	Version int64
	ETag    string
	// ModelID is the Plug and Play model id the device announced when it
	// connected; "" if none.
	ModelID string
	// Tags are the back-end's tags.
	Tags map[string]any
	// Desired and Reported are the properties; DesiredVersion and
	// ReportedVersion their $version.
	Desired         map[string]any
	DesiredVersion  int64
	Reported        map[string]any
	ReportedVersion int64
}

// Twin returns the twin of an identity ("deviceID" or
// "deviceID/moduleID"): use it to check what a device reported. It fails
// t if there is no such identity.
func (s *Server) Twin(t TB, id string) *Twin {
	t.Helper()
	pid := parseID(id)
	tw, herr := s.h.Engine.GetTwin(pid.DeviceID, pid.ModuleID)
	if herr != nil {
		fatal(t, herr)
		return nil
	}
	out, err := toTwin(tw)
	fatal(t, err)
	return out
}

// UpdateDesired merges patch into an identity's desired properties, as a
// back-end's twin PATCH does whatever the twin's version (a nil value
// deletes a property, a map is merged), and returns their new version.
// The change is sent to the device if it is connected and listening for
// it. It fails t if there is no such identity or the hub refuses the
// patch.
func (s *Server) UpdateDesired(t TB, id string, patch map[string]any) int64 {
	t.Helper()
	tw := s.patchTwin(t, id, "desired", patch)
	if tw == nil {
		return 0
	}
	return tw.DesiredVersion
}

// UpdateTags merges patch into an identity's tags, as a back-end's twin
// PATCH does, and returns the twin's new version. It fails t if there is
// no such identity or the hub refuses the patch.
func (s *Server) UpdateTags(t TB, id string, patch map[string]any) int64 {
	t.Helper()
	tw := s.patchTwin(t, id, "tags", patch)
	if tw == nil {
		return 0
	}
	return tw.Version
}

func (s *Server) patchTwin(t TB, id, section string, patch map[string]any) *Twin {
	t.Helper()
	if patch == nil {
		fatal(t, fmt.Errorf("iothub: the %s patch for %s is nil", section, id))
		return nil
	}
	var body any = map[string]any{"tags": patch}
	if section == "desired" {
		body = map[string]any{"properties": map[string]any{"desired": patch}}
	}
	b, err := json.Marshal(body)
	if err != nil {
		fatal(t, fmt.Errorf("iothub: the %s patch for %s: %w", section, id, err))
		return nil
	}
	pid := parseID(id)
	tw, herr := s.h.Engine.UpdateTwin(pid.DeviceID, pid.ModuleID, b, "")
	if herr != nil {
		fatal(t, herr)
		return nil
	}
	out, err := toTwin(tw)
	fatal(t, err)
	return out
}

// UpdateReported merges patch into an identity's reported properties, as
// the device itself would (a nil value deletes a property), and returns
// their new version. It lets a test give back-end code a twin to read
// without running a device. It fails t if there is no such identity or the
// hub refuses the patch.
func (s *Server) UpdateReported(t TB, id string, patch map[string]any) int64 {
	t.Helper()
	if patch == nil {
		fatal(t, fmt.Errorf("iothub: the reported-properties patch for %s is nil", id))
		return 0
	}
	body, err := json.Marshal(patch)
	if err != nil {
		fatal(t, fmt.Errorf("iothub: the reported-properties patch for %s: %w", id, err))
		return 0
	}
	v, herr := s.h.Engine.UpdateReported(parseID(id), body)
	if herr != nil {
		fatal(t, herr)
		return 0
	}
	return v
}

// toTwin decodes the hub's twin from the JSON the service API sends.
func toTwin(tw engine.Twin) (*Twin, error) {
	var props struct {
		Desired, Reported map[string]any
	}
	if err := json.Unmarshal(tw.Properties, &props); err != nil {
		return nil, fmt.Errorf("iothub: the hub's twin properties: %w", err)
	}
	out := &Twin{Version: tw.Version, ETag: tw.ETag, ModelID: tw.ModelID, Tags: map[string]any{}}
	if len(tw.Tags) > 0 {
		if err := json.Unmarshal(tw.Tags, &out.Tags); err != nil {
			return nil, fmt.Errorf("iothub: the hub's twin tags: %w", err)
		}
	}
	out.Desired, out.DesiredVersion = split(props.Desired)
	out.Reported, out.ReportedVersion = split(props.Reported)
	return out, nil
}

// split takes $version and $metadata out of a section.
func split(m map[string]any) (map[string]any, int64) {
	var v int64
	if f, ok := m["$version"].(float64); ok {
		v = int64(f)
	}
	delete(m, "$version")
	delete(m, "$metadata")
	if m == nil {
		m = map[string]any{}
	}
	return m, v
}
