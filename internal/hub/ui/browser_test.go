package ui_test

// The dashboard in a real browser: headless Chromium, driven over the
// DevTools protocol by chromedp. The test is never skipped silently: it
// fails when no Chromium is found, unless IOTHUB_NO_BROWSER=1 is set.
//
//	IOTHUB_CHROMIUM=/path/to/chromium   the browser to run (default: chromium,
//	                                    chromium-browser, google-chrome on PATH)
//	IOTHUB_NO_BROWSER=1                 skip the browser test (machines without Chromium)
//	go test ./internal/hub/ui -run Chromium -args -screenshot=../../../docs/dashboard.png
//	                                    also save a screenshot of the dashboard

import (
	"context"
	"crypto/tls"
	"flag"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/device"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
)

var screenshot = flag.String("screenshot", "", "save a PNG screenshot of the dashboard to this file")

// chromiumPath finds the browser, or fails the test with what to do.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if os.Getenv("IOTHUB_NO_BROWSER") == "1" {
		t.Skip("IOTHUB_NO_BROWSER=1: the dashboard's browser test is skipped")
	}
	if p := os.Getenv("IOTHUB_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found for the dashboard's browser test: install it (Debian: apt-get install -y chromium), " +
		"set IOTHUB_CHROMIUM to its path, or set IOTHUB_NO_BROWSER=1 to skip this test")
	return ""
}

func TestDashboardInChromium(t *testing.T) {
	browser := chromiumPath(t)

	h, err := hub.Start(hub.Options{UI: true})
	require.NoError(t, err, "start the hub")
	t.Cleanup(func() { h.Close() })
	addr := h.Addrs()[0].String()
	_, port, _ := net.SplitHostPort(addr)

	// A device that answers "reboot" and sends one telemetry message.
	d, herr := h.Engine.PutDevice("dev1", engine.Device{}, "")
	require.Nil(t, herr)
	_, herr = h.Engine.PutModule("dev1", "mod1", engine.Module{}, "")
	require.Nil(t, herr)
	cs := auth.ConnectionString{HostName: "localhost", GatewayHostName: addr, DeviceID: "dev1",
		SharedAccessKey: *d.Authentication.SymmetricKey.PrimaryKey}
	dev, err := device.NewClientFromConnectionString(cs.Reveal(), &device.ClientOptions{TLSConfig: &tls.Config{RootCAs: h.CA.Pool(), MinVersion: tls.VersionTLS12}})
	require.NoError(t, err)
	require.NoError(t, dev.SetMethodHandler("reboot", func(ctx context.Context, req *device.MethodRequest) (*device.MethodResponse, error) {
		return device.JSONResponse(200, map[string]string{"result": "rebooting"})
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	require.NoError(t, dev.Connect(ctx))
	t.Cleanup(func() { _ = dev.Close(context.Background()) })
	require.NoError(t, dev.SendEvent(ctx, &device.Message{Body: []byte(`{"temperature":21.5}`), ContentType: "application/json"}))

	// Headless Chromium; the hub's certificate is from its own CA, which
	// the browser does not know.
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, allocOpts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	login := h.UI.LoginURL("https://localhost:" + port)
	connected := chromedp.CSS(`#devices tr[data-device="dev1"][data-state="Connected"]`)
	twinShown := `document.getElementById("twin").textContent.includes('"deviceId": "dev1"')`
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, "read %s", sel)
		return s
	}
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(login),
		chromedp.WaitVisible(connected),
		chromedp.WaitVisible(chromedp.CSS(`#devices tr[data-device="dev1"][data-module="mod1"][data-state="Disconnected"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#events tr[data-device="dev1"]`)),
	), "log in with the one-time link and see dev1 connected, its module mod1 not")
	require.Contains(t, text(`#events`), "temperature", "the telemetry on the page")

	// Selecting the device shows its twin and fills in the form's device.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(connected),
		chromedp.Poll[chromedp.Void](twinShown),
	), "show dev1's twin")
	require.Contains(t, text(`#twin`), `"connectionState": "Connected"`, "the twin on the page")

	require.NoError(t, chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS(`#method-name`), "reboot"),
		chromedp.SetValue(chromedp.CSS(`#method-payload`), `{"delay":1}`),
		chromedp.Click(chromedp.CSS(`#method-submit`)),
		chromedp.WaitVisible(chromedp.CSS(`#method-result[data-status]`)),
	), "invoke reboot from the page's form")
	result := text(`#method-result`)
	require.Contains(t, result, "Device answered 200", "the method result on the page")
	require.Contains(t, result, `"result": "rebooting"`, "the method result on the page")

	require.NoError(t, chromedp.Do(bctx,
		chromedp.WaitVisible(chromedp.CSS(`#calls tr[data-method="reboot"][data-status="200"]`)),
	), "the call log shows the call")
	require.Contains(t, text(`#calls`), "dev1", "the call log on the page")

	calls := h.Engine.Calls()
	require.Len(t, calls, 1, "the page made one method call")
	require.Equal(t, `{"delay":1}`, string(calls[0].Payload), "the payload typed on the page")

	// The one-time link is spent: using it again shows the login form.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(login),
		chromedp.WaitVisible(chromedp.CSS(`#login-error`)),
	), "a used login link is refused")
	require.Contains(t, text(`#login-error`), "already used")

	if *screenshot != "" {
		require.NoError(t, chromedp.Do(bctx,
			chromedp.Navigate("https://localhost:"+port+"/ui/"),
			chromedp.WaitVisible(chromedp.CSS(`#calls tr[data-method="reboot"]`)),
			chromedp.Click(connected),
			chromedp.Poll[chromedp.Void](twinShown),
			chromedp.SetValue(chromedp.CSS(`#method-name`), "reboot"),
			chromedp.Click(chromedp.CSS(`#method-submit`)),
			chromedp.WaitVisible(chromedp.CSS(`#method-result[data-status]`)),
		), "prepare the screenshot")
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		require.NoError(t, err, "screenshot")
		require.NoError(t, os.WriteFile(*screenshot, png, 0o644))
	}
}
