package service

import "github.com/iothub-go/iothub/auth"

// SetTokenProviderForTest replaces the token provider of a client made
// from a connection string, for tests of token renewal.
func SetTokenProviderForTest(c *Client, p auth.TokenProvider) { c.tokens = p }
