//go:build conformance

package conformance

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNodeAMQP runs the official Node device SDK over AMQP (TLS, port
// 5671) and AMQP over WebSocket (port 443, subprotocol AMQPWSB10): no
// SASL, a CBS put-token, the method links, and calls from the official
// Node service client through `iothub hub`.
func TestNodeAMQP(t *testing.T) {
	h := startHub(t, "dev-amqp", "dev-amqpws")
	for _, tr := range []struct{ device, transport string }{
		{"dev-amqp", "amqp"},
		{"dev-amqpws", "amqpws"},
	} {
		t.Run("method over "+tr.transport, func(t *testing.T) {
			devicePeer(t, h, tr.device, tr.transport)
			// Two calls on one connection: a nested payload, then a larger
			// one. (Multi-frame messages are covered by the Go tests:
			// invoke.js loses stdout beyond 64 KB, as it exits while the
			// pipe is still being written.)
			for i, payload := range []string{
				fmt.Sprintf(`{"who":%q,"n":[1,2.5,"x",null,{"deep":true}]}`, tr.transport),
				fmt.Sprintf(`{"big":%q}`, strings.Repeat("z", 30*1024)),
			} {
				res, code := invoke(t, h, tr.device, payload)
				require.Equal(t, 0, code, "call %d: invoke exit status: %v", i, mustJSON(res))
				want := fmt.Sprintf(`{"payload":{"payload":%s,"result":"ok"},"status":200}`, mustJSON(decode(t, payload)))
				if got := mustJSON(res); got != want {
					// Not require.Equal: its diff of two 30 kB lines helps nobody.
					if len(got) > 300 {
						got = got[:300] + "…"
					}
					require.FailNow(t, "invoke result", "call %d:\n got %s\nwant %.300s", i, got, want)
				}
			}
		})
	}
}
