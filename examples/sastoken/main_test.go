package main

import (
	"strings"
	"testing"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
)

func TestRun(t *testing.T) {
	for _, cs := range []string{
		"", // a demo device with a random key
		"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=aW90aHViLXRlc3Qta2V5LTAzLTAxMjM0NTY3ODlhYmNkZWY=",
	} {
		var out exampletest.Buffer
		if err := run(cs, &out); err != nil {
			t.Fatalf("run(%q): %v", cs, err)
		}
		exampletest.WantInOrder(t, out.String(), "SharedAccessKey=<redacted>", "sig=<redacted>", "hub verification:  accepted", "as another device: rejected")
		if strings.Contains(out.String(), "aW90aHViLXRlc3Qta2V5") {
			t.Errorf("the key was printed:\n%s", out.String())
		}
	}
	var out exampletest.Buffer
	if err := run("HostName=h;DeviceId=d;SharedAccessKey=not base64!", &out); err == nil {
		t.Error("bad connection string: no error")
	}
}
