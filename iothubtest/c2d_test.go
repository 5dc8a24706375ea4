package iothubtest

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

func TestC2DQueueSendAndClock(t *testing.T) {
	s := NewServer(t, nil)
	s.AddDevice(t, "dev1")
	assert.Nil(t, s.C2DQueue("dev1"))
	assert.Nil(t, s.C2DQueue("nope"))

	require.NoError(t, s.SendC2D("dev1", []byte("a"), map[string]string{"k": "v"}))
	q, err := s.SendC2DMessage("dev1", C2DMessage{MessageID: "m2", Ack: "full", TTL: time.Minute, Body: []byte("b")})
	require.NoError(t, err)
	assert.WithinDuration(t, q.EnqueuedTime.Add(time.Minute), q.ExpiryTime, time.Second)

	got := s.C2DQueue("dev1")
	require.Len(t, got, 2)
	assert.Equal(t, "a", string(got[0].Body))
	assert.Equal(t, "v", got[0].Properties["k"])
	assert.Len(t, got[0].MessageID, 32, "random message id")
	assert.Equal(t, got[0].EnqueuedTime.Add(time.Hour), got[0].ExpiryTime, "default TTL")
	assert.Equal(t, "m2", got[1].MessageID)
	assert.Equal(t, "full", got[1].Ack)
	assert.False(t, got[0].Locked)

	// The hub clock expires m2 after a minute and the other after an hour.
	s.AdvanceClock(time.Minute)
	got = s.C2DQueue("dev1")
	require.Len(t, got, 1)
	assert.Equal(t, "a", string(got[0].Body))
	// m2 asked for full feedback: an Expired record.
	b, ok := s.h.Engine.ReceiveFeedback()
	require.True(t, ok)
	require.Len(t, b.Records, 1)
	assert.Equal(t, "m2", b.Records[0].OriginalMessageID)
	assert.Equal(t, "Expired", b.Records[0].StatusCode)
	require.Nil(t, s.h.Engine.SettleFeedback(b.LockToken, engine.C2DComplete))

	s.AdvanceJobClock(time.Hour)
	assert.Nil(t, s.C2DQueue("dev1"))
}

func TestC2DSendErrors(t *testing.T) {
	s := NewServer(t, nil)
	s.AddDevice(t, "dev1")
	var herr *engine.Error
	err := s.SendC2D("nope", nil, nil)
	require.True(t, errors.As(err, &herr))
	assert.Equal(t, 404001, herr.Code)
	for i := 0; i < 50; i++ {
		require.NoError(t, s.SendC2D("dev1", []byte(strconv.Itoa(i)), nil))
	}
	err = s.SendC2D("dev1", nil, nil)
	require.True(t, errors.As(err, &herr))
	assert.Equal(t, 403004, herr.Code)
	assert.Contains(t, err.Error(), "iothub: ")
	_, err = s.SendC2DMessage("dev1", C2DMessage{Ack: "maybe"})
	require.Error(t, err)
}

func TestInjectFeedback(t *testing.T) {
	s := NewServer(t, nil)
	s.InjectFeedback(FeedbackRecord{OriginalMessageID: "x", DeviceID: "d", StatusCode: "Rejected", Description: "Rejected"})
	s.InjectFeedback(FeedbackRecord{OriginalMessageID: "y", DeviceID: "d", StatusCode: "Success"})
	b, ok := s.h.Engine.ReceiveFeedback()
	require.True(t, ok, "the first record goes out at once")
	require.Len(t, b.Records, 1)
	assert.Equal(t, "x", b.Records[0].OriginalMessageID)
	assert.Equal(t, "Rejected", b.Records[0].StatusCode)
	assert.False(t, b.Records[0].EnqueuedTime.IsZero())
	_, ok = s.h.Engine.ReceiveFeedback()
	assert.False(t, ok, "the next waits 15 s")
	s.AdvanceClock(15 * time.Second)
	b2, ok := s.h.Engine.ReceiveFeedback()
	require.True(t, ok)
	assert.Equal(t, "y", b2.Records[0].OriginalMessageID)
}
