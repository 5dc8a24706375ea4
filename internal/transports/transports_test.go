package transports

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestByName(t *testing.T) {
	for _, n := range Names {
		tr, err := ByName(n)
		if assert.NoError(t, err, n) && assert.NotNil(t, tr, n) {
			assert.Equal(t, n, tr.Name())
		}
	}
	_, err := ByName("carrier-pigeon")
	assert.ErrorContains(t, err, `"carrier-pigeon"`, "unknown name")
}
