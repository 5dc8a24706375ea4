package main

import (
	"strings"
	"testing"

	"github.com/iothub-go/iothub/examples/internal/exampletest"
)

func TestRun(t *testing.T) {
	var out exampletest.Buffer
	if err := run(exampletest.Context(t), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	exampletest.WantInOrder(t, out.String(),
		"entra:   token requested for [https://iothubs.azure.net/.default]",
		"service: registered entra-device with an Entra token",
		"device:  entra-device connected over mqtt",
		`service: reboot -> 200 {"result":"Reboot started."}`,
	)
	// azcore caches the token: one request for the whole run.
	if n := strings.Count(out.String(), "token requested"); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}
