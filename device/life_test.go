package device

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The client's life behaves as a context of package context does for the
// contexts derived from it: they end with it, and their own end or cancel
// leaves nothing registered with it.
func TestLifeContext(t *testing.T) {
	var l lifeContext
	require.NoError(t, l.Err())
	_, has := l.Deadline()
	assert.False(t, has, "deadline")
	assert.Nil(t, l.Value("k"))

	// A derived context that is cancelled first unregisters itself.
	ctx, cancel := context.WithTimeout(&l, time.Minute)
	require.NotNil(t, l.afters, "the derived context registers with AfterFunc")
	require.Nil(t, l.afters.next, "one registration")
	cancel()
	require.ErrorIs(t, ctx.Err(), context.Canceled)
	assert.Nil(t, l.afters, "cancelling the derived context unregisters it")
	first, cancelFirst := context.WithCancel(&l)
	_, cancelSecond := context.WithCancel(&l)
	cancelFirst() // the list's second entry
	require.NotNil(t, l.afters, "the second context's registration stays")
	require.Nil(t, l.afters.next, "the first context's registration is gone")
	cancelSecond()
	assert.Nil(t, l.afters, "both unregistered")
	require.ErrorIs(t, first.Err(), context.Canceled)

	// A derived context that is live when the life ends ends with it.
	live, cancelLive := context.WithCancel(&l)
	defer cancelLive()
	done := l.Done()
	ran := make(chan struct{})
	stop := l.AfterFunc(func() { close(ran) })
	never := l.AfterFunc(func() { t.Error("a stopped function ran") })
	require.True(t, never(), "stop before end")
	require.False(t, never(), "stop twice")

	l.end()
	l.end() // a second end does nothing
	require.ErrorIs(t, l.Err(), context.Canceled)
	select {
	case <-done:
	default:
		require.FailNow(t, "Done's channel is not closed after end")
	}
	select {
	case <-l.Done(): // a channel made after end is closed too
	default:
		require.FailNow(t, "Done after end")
	}
	select {
	case <-live.Done():
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the derived context did not end with the life")
	}
	require.ErrorIs(t, live.Err(), context.Canceled)
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "AfterFunc's function did not run")
	}
	require.False(t, stop(), "stop after the function ran")

	// After the end, AfterFunc runs at once, and derived contexts are born
	// ended.
	late := make(chan struct{})
	require.False(t, l.AfterFunc(func() { close(late) })())
	select {
	case <-late:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "AfterFunc after end did not run")
	}
	born, cancelBorn := context.WithTimeout(&l, time.Minute)
	defer cancelBorn()
	require.ErrorIs(t, born.Err(), context.Canceled)
}
