package mqttd

import (
	"context"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiHandler passes mochi's log records on without the packets and
// client structures mochi attaches to some of them: those hold CONNECT
// passwords (SAS tokens) and payloads, which must never reach a log.
// Mochi's INFO records (hook added, server stopping…) are library
// chatter and become DEBUG.
type mochiHandler struct{ h slog.Handler }

func demote(l slog.Level) slog.Level {
	if l < slog.LevelWarn {
		return slog.LevelDebug
	}
	return l
}

func (r mochiHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return r.h.Enabled(ctx, demote(l))
}

func (r mochiHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, demote(rec.Level), rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r mochiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = redactAttr(a)
	}
	return mochiHandler{r.h.WithAttrs(clean)}
}

func (r mochiHandler) WithGroup(name string) slog.Handler { return mochiHandler{r.h.WithGroup(name)} }

func redactAttr(a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	switch v := a.Value.Any().(type) {
	case packets.Packet:
		return slog.Int("packetType", int(v.FixedHeader.Type))
	case *packets.Packet:
		if v != nil {
			return slog.Int("packetType", int(v.FixedHeader.Type))
		}
	case *mqtt.Client, mqtt.Will, *packets.Packets:
		return slog.String(a.Key, "[redacted]")
	}
	return a
}
