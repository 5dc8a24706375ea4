package iothubtest

import (
	"encoding/json"
	"fmt"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/service"
)

// Twin returns the twin of an identity ("deviceID" or
// "deviceID/moduleID") as the service API would: tags, desired and
// reported properties with their versions and metadata, and the
// identity's fields. Use it to check what a device reported. It fails t
// if there is no such identity.
func (s *Server) Twin(t TB, id string) *service.Twin {
	t.Helper()
	pid := parseID(id)
	tw, herr := s.h.Engine.GetTwin(pid.DeviceID, pid.ModuleID)
	if herr != nil {
		fatal(t, herr)
	}
	return toTwin(t, tw)
}

// UpdateTwin merges patch into an identity's tags and desired properties
// as the service API's PATCH does, whatever the twin's version, and
// returns the twin as it then is. A desired-property change is sent to the
// device if it is connected and listening for it. It fails t if there is
// no such identity or the hub refuses the patch (see service.TwinPatch).
func (s *Server) UpdateTwin(t TB, id string, patch service.TwinPatch) *service.Twin {
	t.Helper()
	body, err := json.Marshal(patch)
	fatal(t, err)
	pid := parseID(id)
	tw, herr := s.h.Engine.UpdateTwin(pid.DeviceID, pid.ModuleID, body, "")
	if herr != nil {
		fatal(t, herr)
	}
	return toTwin(t, tw)
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
	}
	body, err := json.Marshal(patch)
	fatal(t, err)
	v, herr := s.h.Engine.UpdateReported(parseID(id), body)
	if herr != nil {
		fatal(t, herr)
	}
	return v
}

// toTwin converts the hub's twin through its wire JSON, so a test sees
// exactly what a service client would.
func toTwin(t TB, tw engine.Twin) *service.Twin {
	t.Helper()
	b, err := json.Marshal(tw)
	fatal(t, err)
	var out service.Twin
	fatal(t, json.Unmarshal(b, &out))
	return &out
}
