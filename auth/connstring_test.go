package auth_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
)

const devHost = "myhub.azure-devices.net"

// allIDChars is every punctuation character the registry allows in an id.
const allIDChars = "-:.+%_#*?!(),=@$'"

func TestParseDeviceConnectionStringValid(t *testing.T) {
	devSAS := testToken(t, primaryKey, testEncode(devHost+"/devices/dev1"), "4102444800", "")
	modSAS := testToken(t, primaryKey, testEncode(devHost+"/devices/dev1/modules/mod1"), "4102444800", "")
	hubSAS := testToken(t, primaryKey, testEncode(devHost), "4102444800", "device")
	gwSAS := testToken(t, primaryKey, testEncode(devHost+"/devices"), "4102444800", "")
	expiredSAS := testToken(t, primaryKey, testEncode(devHost+"/devices/dev1"), "1000", "")
	id128 := strings.Repeat("a", 128-len(allIDChars)) + allIDChars

	tests := []struct {
		name string
		in   string
		want auth.ConnectionString
	}{
		{
			name: "device key",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKey: primaryKey},
		},
		{
			name: "module key",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", ModuleID: "mod1", SharedAccessKey: primaryKey},
		},
		{
			name: "keys are case-insensitive",
			in:   "hostname=myhub.azure-devices.net;DEVICEID=dev1;moduleID=mod1;sharedaccesskey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", ModuleID: "mod1", SharedAccessKey: primaryKey},
		},
		{
			name: "split at first '=' keeps base64 padding",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + otherKey, // ends in "=="
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKey: otherKey},
		},
		{
			name: "order of pairs is free",
			in:   "SharedAccessKey=" + primaryKey + ";DeviceId=dev1;HostName=myhub.azure-devices.net",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKey: primaryKey},
		},
		{
			name: "empty segments and surrounding space tolerated",
			in:   "  HostName=myhub.azure-devices.net;;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";\n",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKey: primaryKey},
		},
		{
			name: "x509=true",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true},
		},
		{
			name: "x509=TRUE case-insensitive",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;X509=TRUE",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true},
		},
		{
			name: "legacy X509Cert=true",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;X509Cert=True",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true},
		},
		{
			name: "x509=false with a key",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=false;SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKey: primaryKey},
		},
		{
			name: "module x509",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;x509=true",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", ModuleID: "mod1", X509: true},
		},
		{
			name: "policy key on a device string",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKeyName=device;SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKeyName: "device", SharedAccessKey: primaryKey},
		},
		{
			name: "device SAS",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + devSAS,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessSignature: devSAS},
		},
		{
			name: "expired SAS still parses (expiry is checked by StaticToken)",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + expiredSAS,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessSignature: expiredSAS},
		},
		{
			name: "module SAS",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;SharedAccessSignature=" + modSAS,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", ModuleID: "mod1", SharedAccessSignature: modSAS},
		},
		{
			name: "hub-scoped policy SAS with matching SharedAccessKeyName",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKeyName=device;SharedAccessSignature=" + hubSAS,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessKeyName: "device", SharedAccessSignature: hubSAS},
		},
		{
			name: "gateway-scoped SAS covers the device",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + gwSAS,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", SharedAccessSignature: gwSAS},
		},
		{
			name: "GatewayHostName host",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true;GatewayHostName=edge-gw.local",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true, GatewayHostName: "edge-gw.local"},
		},
		{
			name: "GatewayHostName host:port",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true;GatewayHostName=localhost:8883",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true, GatewayHostName: "localhost:8883"},
		},
		{
			name: "GatewayHostName IPv4:port",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true;GatewayHostName=127.0.0.1:65535",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true, GatewayHostName: "127.0.0.1:65535"},
		},
		{
			name: "GatewayHostName [IPv6]:port",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true;GatewayHostName=[::1]:1",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true, GatewayHostName: "[::1]:1"},
		},
		{
			name: "GatewayHostName bare IPv6",
			in:   "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true;GatewayHostName=fd00::1",
			want: auth.ConnectionString{HostName: devHost, DeviceID: "dev1", X509: true, GatewayHostName: "fd00::1"},
		},
		{
			name: "DeviceId with every allowed punctuation, 128 long",
			in:   "HostName=myhub.azure-devices.net;DeviceId=" + id128 + ";SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, DeviceID: id128, SharedAccessKey: primaryKey},
		},
		{
			name: "DeviceId containing '='",
			in:   "HostName=myhub.azure-devices.net;DeviceId=a=b;SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, DeviceID: "a=b", SharedAccessKey: primaryKey},
		},
		{
			name: "single-label host",
			in:   "HostName=localhost;DeviceId=dev1;x509=true",
			want: auth.ConnectionString{HostName: "localhost", DeviceID: "dev1", X509: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.ParseDeviceConnectionString(tt.in)
			require.NoError(t, err, "ParseDeviceConnectionString")
			require.Equal(t, tt.want, got, "parsed (revealed: %q)", got.Reveal())
			// Reveal round-trips.
			again, err := auth.ParseDeviceConnectionString(got.Reveal())
			require.NoError(t, err, "re-parse of Reveal()")
			require.Equal(t, got, again, "Reveal round trip")
		})
	}
}

func TestParseDeviceConnectionStringInvalid(t *testing.T) {
	const h = "HostName=myhub.azure-devices.net;"
	const dk = h + "DeviceId=dev1;"
	const key = "SharedAccessKey=" + primaryKey
	other := testToken(t, primaryKey, testEncode(devHost+"/devices/dev2"), "4102444800", "")
	prefixDev := testToken(t, primaryKey, testEncode(devHost+"/devices/dev1"), "4102444800", "")
	otherHub := testToken(t, primaryKey, testEncode("otherhub.azure-devices.net/devices/dev1"), "4102444800", "")
	otherModule := testToken(t, primaryKey, testEncode(devHost+"/devices/dev1/modules/mod2"), "4102444800", "")
	devicePolicy := testToken(t, primaryKey, testEncode(devHost), "4102444800", "device")
	noSKN := testToken(t, primaryKey, testEncode(devHost), "4102444800", "")

	tests := []struct {
		name string
		in   string
		// wantInMsg must appear in the error message: the offending key, or
		// where no single key is at fault, the part that is.
		wantInMsg string
	}{
		{"empty", "", "empty"},
		{"only spaces", "  \t ", "empty"},
		{"pair without '='", h + "DeviceId", "part 2"},
		{"unknown key", dk + key + ";Foo=bar", "Foo"},
		{"unknown key that is not a name", dk + key + ";Shared Access Key=x", "part 4"},
		{"key with leading space", h + " DeviceId=dev1;" + key, "part 2"},
		{"empty key name", dk + key + ";=x", "part 4"},
		{"duplicate DeviceId", dk + "DeviceId=dev2;" + key, "DeviceId"},
		{"duplicate differing only in case", dk + "hostname=otherhub.azure-devices.net;" + key, "HostName"},
		{"duplicate x509 via legacy spelling", dk + "x509=true;X509Cert=true", "x509"},
		{"duplicate SharedAccessKey", dk + key + ";" + key, "SharedAccessKey"},
		{"empty DeviceId", h + "DeviceId=;" + key, "DeviceId"},
		{"empty HostName", "HostName=;DeviceId=dev1;" + key, "HostName"},
		{"empty SharedAccessKey", dk + "SharedAccessKey=", "SharedAccessKey"},
		{"empty x509", dk + "x509=", "x509"},
		{"missing HostName", "DeviceId=dev1;" + key, "HostName"},
		{"missing DeviceId", h + key, "DeviceId"},
		{"missing DeviceId, service string given", h + "SharedAccessKeyName=iothubowner;" + key, "DeviceId"},
		{"ModuleId without DeviceId", h + "ModuleId=mod1;" + key, "DeviceId"},
		{"no credential", dk, "SharedAccessKey"},
		{"x509=false is no credential", dk + "x509=false", "x509"},
		{"key and x509", dk + key + ";x509=true", "x509"},
		{"key and SAS", dk + key + ";SharedAccessSignature=" + prefixDev, "SharedAccessSignature"},
		{"SAS and x509", dk + "x509=true;SharedAccessSignature=" + prefixDev, "x509"},
		{"bad base64 key", dk + "SharedAccessKey=not*base64", "SharedAccessKey"},
		{"truncated base64 key", dk + "SharedAccessKey=" + primaryKey[:len(primaryKey)-2], "SharedAccessKey"},
		{"DeviceId with '/'", h + "DeviceId=dev/1;" + key, "DeviceId"},
		{"DeviceId with space", h + "DeviceId=dev 1;" + key, "DeviceId"},
		{"DeviceId with non-ASCII", h + "DeviceId=dév;" + key, "DeviceId"},
		{"DeviceId with '&'", h + "DeviceId=a&b;" + key, "DeviceId"},
		{"DeviceId 129 long", h + "DeviceId=" + strings.Repeat("d", 129) + ";" + key, "DeviceId"},
		{"ModuleId bad", dk + "ModuleId=mod/1;" + key, "ModuleId"},
		{"ModuleId 129 long", dk + "ModuleId=" + strings.Repeat("m", 129) + ";" + key, "ModuleId"},
		{"HostName with port", "HostName=myhub.azure-devices.net:8883;DeviceId=dev1;" + key, "HostName"},
		{"HostName with space", "HostName=my hub.net;DeviceId=dev1;" + key, "HostName"},
		{"HostName with scheme", "HostName=https://myhub.net;DeviceId=dev1;" + key, "HostName"},
		{"HostName with empty hub name", "HostName=.azure-devices.net;DeviceId=dev1;" + key, "HostName"},
		{"HostName too long", "HostName=" + strings.Repeat("h", 256) + ";DeviceId=dev1;" + key, "HostName"},
		{"GatewayHostName port 0", dk + key + ";GatewayHostName=gw:0", "GatewayHostName"},
		{"GatewayHostName port 65536", dk + key + ";GatewayHostName=gw:65536", "GatewayHostName"},
		{"GatewayHostName port not a number", dk + key + ";GatewayHostName=gw:mqtt", "GatewayHostName"},
		{"GatewayHostName negative port", dk + key + ";GatewayHostName=gw:-1", "GatewayHostName"},
		{"GatewayHostName empty port", dk + key + ";GatewayHostName=gw:", "GatewayHostName"},
		{"GatewayHostName empty host", dk + key + ";GatewayHostName=:8883", "GatewayHostName"},
		{"GatewayHostName bracket without port", dk + key + ";GatewayHostName=[::1]", "GatewayHostName"},
		{"GatewayHostName bad character", dk + key + ";GatewayHostName=gw/x", "GatewayHostName"},
		{"GatewayHostName two ports", dk + key + ";GatewayHostName=gw:1:2", "GatewayHostName"},
		{"x509 garbage", dk + "x509=yes", "x509"},
		{"x509 numeric", dk + "x509=1", "x509"},
		{"SharedAccessKeyName bad character", dk + "SharedAccessKeyName=my policy;" + key, "SharedAccessKeyName"},
		{"SharedAccessKeyName with x509", dk + "SharedAccessKeyName=device;x509=true", "SharedAccessKeyName"},
		{"SAS malformed", dk + "SharedAccessSignature=sr=x&sig=y&se=1", "SharedAccessSignature"},
		{"SAS missing sig", dk + "SharedAccessSignature=SharedAccessSignature sr=" + testEncode(devHost+"/devices/dev1") + "&se=1", "SharedAccessSignature"},
		{"SAS for another device", dk + "SharedAccessSignature=" + other, "SharedAccessSignature"},
		{"SAS for a device with a longer id", h + "DeviceId=dev10;SharedAccessSignature=" + prefixDev, "SharedAccessSignature"},
		{"SAS for another hub", dk + "SharedAccessSignature=" + otherHub, "SharedAccessSignature"},
		{"SAS for another module", dk + "ModuleId=mod1;SharedAccessSignature=" + otherModule, "SharedAccessSignature"},
		{"SAS skn differs from SharedAccessKeyName", dk + "SharedAccessKeyName=iothubowner;SharedAccessSignature=" + devicePolicy, "SharedAccessSignature"},
		{"SAS without skn but SharedAccessKeyName set", dk + "SharedAccessKeyName=device;SharedAccessSignature=" + noSKN, "SharedAccessSignature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.ParseDeviceConnectionString(tt.in)
			checkConnStringError(t, got, err, tt.wantInMsg)
		})
	}
}

func TestParseServiceConnectionString(t *testing.T) {
	ownerSAS := testToken(t, primaryKey, testEncode(devHost), "4102444800", "iothubowner")
	serviceSAS := testToken(t, primaryKey, testEncode(devHost), "4102444800", "service")
	noSKN := testToken(t, primaryKey, testEncode(devHost), "4102444800", "")
	otherHub := testToken(t, primaryKey, testEncode("otherhub.azure-devices.net"), "4102444800", "iothubowner")
	deviceScoped := testToken(t, primaryKey, testEncode(devHost+"/devices/dev1"), "4102444800", "iothubowner")

	valid := []struct {
		name string
		in   string
		want auth.ConnectionString
	}{
		{
			name: "policy key",
			in:   "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, SharedAccessKeyName: "iothubowner", SharedAccessKey: primaryKey},
		},
		{
			name: "case-insensitive keys, any order",
			in:   "SHAREDACCESSKEY=" + primaryKey + ";sharedAccessKeyName=service;hostname=myhub.azure-devices.net",
			want: auth.ConnectionString{HostName: devHost, SharedAccessKeyName: "service", SharedAccessKey: primaryKey},
		},
		{
			name: "policy name with allowed punctuation",
			in:   "HostName=myhub.azure-devices.net;SharedAccessKeyName=my_policy-1@x.y;SharedAccessKey=" + primaryKey,
			want: auth.ConnectionString{HostName: devHost, SharedAccessKeyName: "my_policy-1@x.y", SharedAccessKey: primaryKey},
		},
		{
			name: "GatewayHostName host:port (local hub)",
			in:   "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + primaryKey + ";GatewayHostName=127.0.0.1:8443",
			want: auth.ConnectionString{HostName: devHost, GatewayHostName: "127.0.0.1:8443", SharedAccessKeyName: "iothubowner", SharedAccessKey: primaryKey},
		},
		{
			name: "policy SAS",
			in:   "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessSignature=" + ownerSAS,
			want: auth.ConnectionString{HostName: devHost, SharedAccessKeyName: "iothubowner", SharedAccessSignature: ownerSAS},
		},
	}
	for _, tt := range valid {
		t.Run("valid/"+tt.name, func(t *testing.T) {
			got, err := auth.ParseServiceConnectionString(tt.in)
			require.NoError(t, err, "ParseServiceConnectionString")
			require.Equal(t, tt.want, got, "parsed")
			again, err := auth.ParseServiceConnectionString(got.Reveal())
			require.NoError(t, err, "re-parse of Reveal()")
			require.Equal(t, got, again, "Reveal round trip")
		})
	}

	const h = "HostName=myhub.azure-devices.net;"
	const pol = h + "SharedAccessKeyName=iothubowner;"
	const key = "SharedAccessKey=" + primaryKey
	invalid := []struct {
		name      string
		in        string
		wantInMsg string
	}{
		{"empty", "", "empty"},
		{"device string", h + "DeviceId=dev1;" + key, "DeviceId"},
		{"DeviceId with policy", pol + "DeviceId=dev1;" + key, "DeviceId"},
		{"ModuleId", pol + "ModuleId=mod1;" + key, "ModuleId"},
		{"GatewayHostName bad port", pol + key + ";GatewayHostName=gw:0", "GatewayHostName"},
		{"GatewayHostName with port on HostName", "HostName=myhub.azure-devices.net:443;SharedAccessKeyName=iothubowner;" + key + ";GatewayHostName=gw:443", "HostName"},
		{"x509=true", pol + "x509=true", "x509"},
		{"x509=false", pol + key + ";x509=false", "x509"},
		{"missing SharedAccessKeyName", h + key, "SharedAccessKeyName"},
		{"empty SharedAccessKeyName", h + "SharedAccessKeyName=;" + key, "SharedAccessKeyName"},
		{"bad SharedAccessKeyName", h + "SharedAccessKeyName=own/er;" + key, "SharedAccessKeyName"},
		{"missing HostName", "SharedAccessKeyName=iothubowner;" + key, "HostName"},
		{"HostName with port", "HostName=myhub.azure-devices.net:443;SharedAccessKeyName=iothubowner;" + key, "HostName"},
		{"HostName with empty hub name", "HostName=.azure-devices.net;SharedAccessKeyName=iothubowner;" + key, "HostName"},
		{"no key or SAS", pol, "SharedAccessKey"},
		{"key and SAS", pol + key + ";SharedAccessSignature=" + ownerSAS, "SharedAccessSignature"},
		{"bad base64 key", pol + "SharedAccessKey=%%%%", "SharedAccessKey"},
		{"duplicate key name", pol + "SharedAccessKeyName=service;" + key, "SharedAccessKeyName"},
		{"unknown key", pol + key + ";EntityPath=x", "EntityPath"},
		{"SAS skn mismatch", pol + "SharedAccessSignature=" + serviceSAS, "SharedAccessSignature"},
		{"SAS without skn", pol + "SharedAccessSignature=" + noSKN, "SharedAccessSignature"},
		{"SAS for another hub", pol + "SharedAccessSignature=" + otherHub, "SharedAccessSignature"},
		{"SAS scoped to one device", pol + "SharedAccessSignature=" + deviceScoped, "SharedAccessSignature"},
		{"SAS malformed", pol + "SharedAccessSignature=SharedAccessSignature sr=x", "SharedAccessSignature"},
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.name, func(t *testing.T) {
			got, err := auth.ParseServiceConnectionString(tt.in)
			checkConnStringError(t, got, err, tt.wantInMsg)
		})
	}
}

func checkConnStringError(t *testing.T, got auth.ConnectionString, err error, wantInMsg string) {
	t.Helper()
	require.Error(t, err, "no error; parsed %q", got.Reveal())
	assert.ErrorIs(t, err, auth.ErrInvalidConnectionString)
	assert.True(t, strings.HasPrefix(err.Error(), "iothub: invalid connection string: "), "error %q lacks the package prefix", err)
	// The message names the offending key (or part): what a user reads.
	assert.ErrorContains(t, err, wantInMsg, "the error does not name the culprit")
	assert.Equal(t, auth.ConnectionString{}, got, "a failed parse returned a non-zero value")
}

// TestConnectionStringErrorsHideSecrets feeds strings whose secret is present
// and checks that the error never repeats it.
func TestConnectionStringErrorsHideSecrets(t *testing.T) {
	const badKey = "c2VjcmV0LWtleS12YWx1ZQ!!" // not base64; a secret nonetheless
	goodSAS := testToken(t, primaryKey, testEncode(devHost+"/devices/dev1"), "4102444800", "")
	otherSAS := testToken(t, primaryKey, testEncode(devHost+"/devices/dev2"), "4102444800", "")
	otherSig := testSig(t, primaryKey, testEncode(devHost+"/devices/dev2"), "4102444800")
	goodSig := testSig(t, primaryKey, testEncode(devHost+"/devices/dev1"), "4102444800")
	badSESAS := "SharedAccessSignature sr=" + testEncode(devHost+"/devices/dev1") + "&sig=" + testEncode(goodSig) + "&se=soon"
	policySAS := testToken(t, primaryKey, testEncode(devHost), "4102444800", "service")
	policySig := testSig(t, primaryKey, testEncode(devHost), "4102444800")

	tests := []struct {
		name    string
		parse   func(string) (auth.ConnectionString, error)
		in      string
		secrets []string
	}{
		{"bad base64 key", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + badKey, []string{badKey}},
		{"valid key, bad DeviceId", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev/1;SharedAccessKey=" + primaryKey, []string{primaryKey}},
		{"valid key plus x509", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";x509=true", []string{primaryKey}},
		{"valid key plus unknown key", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";Extra=1", []string{primaryKey}},
		{"duplicate key", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";SharedAccessKey=" + secondaryKey, []string{primaryKey, secondaryKey}},
		{"SAS with bad se", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + badSESAS, []string{goodSig, testEncode(goodSig)}},
		{"SAS for another device", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessSignature=" + otherSAS, []string{otherSig, testEncode(otherSig)}},
		{"SAS plus key", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";SharedAccessSignature=" + goodSAS, []string{primaryKey, goodSig, testEncode(goodSig)}},
		{"service string with device key", auth.ParseServiceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey, []string{primaryKey}},
		{"service SAS skn mismatch", auth.ParseServiceConnectionString,
			"HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessSignature=" + policySAS, []string{policySig, testEncode(policySig)}},
		// Issue 16.5: a key pasted without "SharedAccessKey=" splits at its
		// '=' padding into an alphanumeric "key name".
		{"pasted key, == padding", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;c2VjcmV0LWtleS12YWx1ZQ==", []string{"c2VjcmV0LWtleS12YWx1ZQ"}},
		{"pasted key, = padding", auth.ParseDeviceConnectionString,
			"HostName=myhub.azure-devices.net;DeviceId=dev1;c2VjcmV0LWtleS12YWx1ZXM=", []string{"c2VjcmV0LWtleS12YWx1ZXM"}},
		{"pasted service key", auth.ParseServiceConnectionString,
			"HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;c2VjcmV0LWtleS12YWx1ZQ==", []string{"c2VjcmV0LWtleS12YWx1ZQ"}},
		{"service bad key", auth.ParseServiceConnectionString,
			"HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + badKey, []string{badKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.parse(tt.in)
			require.Error(t, err)
			for _, s := range tt.secrets {
				assert.NotContains(t, err.Error(), s, "the error contains a secret")
			}
		})
	}
}

func TestConnectionStringAccessors(t *testing.T) {
	c, err := auth.ParseDeviceConnectionString("HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;x509=true;GatewayHostName=gw.local:8883")
	require.NoError(t, err)
	id := c.Identity()
	assert.Equal(t, auth.Identity{HostName: devHost, DeviceID: "dev1", ModuleID: "mod1"}, id, "Identity()")
	assert.Equal(t, "dev1/mod1", id.String(), "Identity.String()")
	assert.Equal(t, "myhub.azure-devices.net/devices/dev1/modules/mod1", id.Resource(), "Identity.Resource()")
	assert.Equal(t, "gw.local:8883", c.Address(), "Address()")
	assert.Equal(t, "HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=mod1;x509=true;GatewayHostName=gw.local:8883", c.Reveal(), "Reveal()")
	assert.Equal(t, c.Reveal(), c.String(), "String() of a secret-free string")

	d := auth.Identity{HostName: devHost, DeviceID: "dev1"}
	assert.Equal(t, "dev1", d.String(), "device Identity.String()")
	assert.Equal(t, "myhub.azure-devices.net/devices/dev1", d.Resource(), "device Identity.Resource()")
	assert.Equal(t, devHost, (auth.ConnectionString{HostName: devHost}).Address(), "Address() without gateway")
}

func TestConnectionStringRevealCanonical(t *testing.T) {
	in := "sharedaccesskey=" + primaryKey + ";deviceid=dev1;hostname=myhub.azure-devices.net;X509=false;gatewayhostname=gw"
	c, err := auth.ParseDeviceConnectionString(in)
	require.NoError(t, err)
	want := "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=" + primaryKey + ";GatewayHostName=gw"
	assert.Equal(t, want, c.Reveal(), "Reveal()")
	assert.Equal(t, "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=<redacted>;GatewayHostName=gw", c.String(), "String()")
}

func TestCheckID(t *testing.T) {
	valid := []string{"a", "dev1", "DEV-1", allIDChars, strings.Repeat("x", 128), "a=b", "dev#1"}
	for _, id := range valid {
		assert.NoError(t, auth.CheckID(id), "CheckID(%q)", id)
	}
	invalid := []string{"", strings.Repeat("x", 129), "dev 1", "dev/1", "dev;1", "dev&1", "dév", "dev\x00", "a\"b", "a<b", "a\\b", "a[b]", "a{b}", "a|b", "a^b", "a`b", "a~b"}
	for _, id := range invalid {
		err := auth.CheckID(id)
		if assert.Error(t, err, "CheckID(%q)", id) {
			assert.True(t, strings.HasPrefix(err.Error(), "iothub: "), "CheckID(%q) error %q lacks the package prefix", id, err)
		}
	}
}
