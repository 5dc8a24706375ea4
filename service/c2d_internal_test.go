package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	amqp "github.com/Azure/go-amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAMQPResponseError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       *amqp.Error
		code     int
		status   int
		sentinel error
		tracking string
	}{
		{"hub JSON", &amqp.Error{Condition: amqp.ErrCondNotFound, Description: `{"errorCode":404001,"message":"Device dev1 not found","trackingId":"t1","timestampUtc":"x","info":null}`}, 404001, 404, ErrDeviceNotFound, "t1"},
		{"condition only: not found", &amqp.Error{Condition: amqp.ErrCondNotFound}, 404001, 404, ErrDeviceNotFound, ""},
		{"condition only: queue full", &amqp.Error{Condition: amqp.ErrCondResourceLimitExceeded, Description: "queue full"}, 403004, 403, ErrDeviceQueueFull, ""},
		{"condition only: too large", &amqp.Error{Condition: amqp.ErrCondMessageSizeExceeded}, 413001, 413, ErrMessageTooLarge, ""},
		{"throttled", &amqp.Error{Condition: "com.microsoft:device-container-throttled"}, 429001, 429, ErrThrottled, ""},
		{"argument", &amqp.Error{Condition: "com.microsoft:argument-error"}, 400004, 400, ErrArgumentInvalid, ""},
		{"not allowed", &amqp.Error{Condition: amqp.ErrCondNotAllowed, Description: "no"}, 0, 400, ErrArgumentInvalid, ""},
		{"unauthorized", &amqp.Error{Condition: amqp.ErrCondUnauthorizedAccess}, 401002, 401, ErrUnauthorized, ""},
		{"lock lost", &amqp.Error{Condition: "com.microsoft:message-lock-lost"}, 412002, 412, ErrLockLost, ""},
		{"description code wins", &amqp.Error{Condition: amqp.ErrCondNotFound, Description: `{"errorCode":403004,"message":"full"}`}, 403004, 403, ErrDeviceQueueFull, ""},
		{"tracking id in info", &amqp.Error{Condition: amqp.ErrCondNotFound, Info: map[string]any{"com.microsoft:tracking-id": "t2"}}, 404001, 404, ErrDeviceNotFound, "t2"},
	} {
		e := amqpResponseError(tc.in)
		assert.Equal(t, tc.code, e.Code, tc.name)
		assert.Equal(t, tc.status, e.StatusCode, tc.name)
		assert.Equal(t, string(tc.in.Condition), e.Condition, tc.name)
		assert.ErrorIs(t, e, tc.sentinel, tc.name)
		assert.Equal(t, tc.tracking, e.TrackingID, tc.name)
		assert.True(t, strings.HasPrefix(e.Error(), "iothub: "), e.Error())
	}
	unknown := amqpResponseError(&amqp.Error{Condition: "x:y"})
	assert.Equal(t, 500, unknown.StatusCode)
	assert.Contains(t, unknown.Error(), "x:y")
	assert.False(t, errors.Is(unknown, ErrDeviceNotFound))
}

func TestAMQPMessage(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	m := (&C2DMessage{
		Body: []byte("b"), MessageID: "m1", CorrelationID: "c1", UserID: "u", ContentType: "text/plain",
		ContentEncoding: "utf-8", Properties: map[string]string{"k": "v"}, TTL: time.Minute, Ack: AckNegative,
	}).amqpMessage("a+b c", now)
	require.NotNil(t, m.Properties)
	assert.Equal(t, "/devices/a+b%20c/messages/devicebound", *m.Properties.To)
	assert.Equal(t, "m1", m.Properties.MessageID)
	assert.Equal(t, "c1", m.Properties.CorrelationID)
	assert.Equal(t, []byte("u"), m.Properties.UserID)
	assert.Equal(t, "text/plain", *m.Properties.ContentType)
	assert.Equal(t, "utf-8", *m.Properties.ContentEncoding)
	assert.Equal(t, now.Add(time.Minute), *m.Properties.AbsoluteExpiryTime)
	assert.Equal(t, map[string]any{"k": "v", "iothub-ack": "negative"}, m.ApplicationProperties)
	assert.Equal(t, [][]byte{[]byte("b")}, m.Data)

	bare := (&C2DMessage{}).amqpMessage("d", now)
	assert.Nil(t, bare.Properties.MessageID, "no message id is made up")
	assert.Nil(t, bare.Properties.AbsoluteExpiryTime)
	assert.Nil(t, bare.ApplicationProperties, "AckNone sends no iothub-ack")
	assert.Equal(t, [][]byte{{}}, bare.Data, "an empty body is one empty data section")
	_, err := bare.MarshalBinary()
	require.NoError(t, err)

	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600))
	abs := (&C2DMessage{ExpiresAt: exp}).amqpMessage("d", now)
	assert.True(t, exp.Equal(*abs.Properties.AbsoluteExpiryTime))
}

func TestAckTypeString(t *testing.T) {
	assert.Equal(t, []string{"none", "positive", "negative", "full", "AckType(9)"},
		[]string{AckNone.String(), AckPositive.String(), AckNegative.String(), AckFull.String(), AckType(9).String()})
}

func TestEntraRenewAt(t *testing.T) {
	now := time.Now()
	assert.Equal(t, now.Add(40*time.Minute), entraRenewAt(azcore.AccessToken{ExpiresOn: now.Add(time.Hour)}, now))
	assert.Equal(t, now.Add(time.Second), entraRenewAt(azcore.AccessToken{ExpiresOn: now}, now), "an expired token: renew soon, not in a loop")
}

func TestDecodeFeedback(t *testing.T) {
	recs, err := decodeFeedback([]byte("\xef\xbb\xbf" + `[
	 {"originalMessageId":"m1","deviceGenerationId":"636","deviceId":"dev1","enqueuedTimeUtc":"2026-12-06T10:00:00.1234567Z","statusCode":"Success","description":"Success"},
	 {"originalMessageId":"m2","deviceId":"dev2","enqueuedTimeUtc":"2026-12-06T10:00:01","statusCode":"rejected","extra":[1,2]},
	 {"originalMessageId":42,"statusCode":2,"enqueuedTimeUtc":"yesterday"},
	 {"statusCode":"SomethingNew","deviceId":{"x":1}}
	]`))
	require.NoError(t, err)
	require.Len(t, recs, 4)
	assert.Equal(t, FeedbackRecord{
		OriginalMessageID: "m1", DeviceGenerationID: "636", DeviceID: "dev1",
		EnqueuedTime: time.Date(2026, 12, 6, 10, 0, 0, 123456700, time.UTC), Status: FeedbackSuccess, Description: "Success",
	}, recs[0])
	assert.Equal(t, FeedbackRejected, recs[1].Status)
	assert.Equal(t, time.Date(2026, 12, 6, 10, 0, 1, 0, time.UTC), recs[1].EnqueuedTime, "no zone means UTC")
	assert.Equal(t, "42", recs[2].OriginalMessageID)
	assert.Equal(t, FeedbackDeliveryCountExceeded, recs[2].Status, ".NET's enum number")
	assert.True(t, recs[2].EnqueuedTime.IsZero())
	assert.Equal(t, FeedbackStatus("SomethingNew"), recs[3].Status)
	assert.Empty(t, recs[3].DeviceID)

	for _, body := range []string{"", "null", "[]", " \n"} {
		recs, err := decodeFeedback([]byte(body))
		assert.NoError(t, err, body)
		assert.Empty(t, recs, body)
	}
	for _, body := range []string{"{}", `"x"`, "[1]", "[null]", "[{]", "42"} {
		_, err := decodeFeedback([]byte(body))
		assert.ErrorIs(t, err, ErrMalformedResponse, body)
	}
}

func FuzzDecodeFeedback(f *testing.F) {
	for _, s := range []string{
		`[{"originalMessageId":"m1","deviceGenerationId":"1","deviceId":"d","enqueuedTimeUtc":"2026-12-06T10:00:00Z","statusCode":"Success","description":"Success"}]`,
		`[{"statusCode":4}]`, `[]`, `null`, `{}`, "\xef\xbb\xbf[{}]", `[{"enqueuedTimeUtc":"2026-12-06 10:00:00"}]`, `[{"deviceId":"\ud800"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		recs, err := decodeFeedback(body)
		if err != nil {
			if !errors.Is(err, ErrMalformedResponse) {
				t.Fatalf("error %v does not match ErrMalformedResponse", err)
			}
			return
		}
		if !json.Valid(bytes.TrimPrefix(bytes.TrimSpace(body), []byte("\xef\xbb\xbf"))) && len(recs) > 0 {
			t.Fatalf("records from invalid JSON %q", body)
		}
		for _, r := range recs {
			for _, s := range []string{r.OriginalMessageID, r.DeviceID, r.DeviceGenerationID, r.Description, string(r.Status)} {
				if !utf8.ValidString(s) {
					t.Fatalf("invalid UTF-8 in %+v", r)
				}
			}
			if !r.EnqueuedTime.IsZero() && r.EnqueuedTime.Location() != time.UTC {
				t.Fatalf("time not in UTC: %v", r.EnqueuedTime)
			}
		}
	})
}
