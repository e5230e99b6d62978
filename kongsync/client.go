package kongsync

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kong/go-kong/kong"
)

// DefaultRequestTimeout bounds one Admin API request unless KongConfig says otherwise.
const DefaultRequestTimeout = 10 * time.Second

// KongConfig says how to reach Kong's Admin API.
type KongConfig struct {
	// URL is the Admin API's base URL, e.g. http://kong:8001. Required.
	URL string
	// Headers are sent with every request, each "Name: value" (e.g. "Kong-Admin-Token: …" for
	// Kong Enterprise RBAC). Values are never logged. Default none.
	Headers []string
	// Workspace is the Kong Enterprise workspace; "" for the default one.
	Workspace string
	// TLSCAFile is a PEM bundle that verifies the Admin API's certificate; "" for the system roots.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a client certificate for mutual TLS; both or neither.
	TLSCertFile, TLSKeyFile string
	// TLSServerName overrides the name the certificate is checked against; "" for the URL's host.
	TLSServerName string
	// TLSInsecureSkipVerify accepts any certificate. Default false; for a lab only.
	TLSInsecureSkipVerify bool
	// RequestTimeout bounds each Admin API request, connection to last byte. Default 10s.
	RequestTimeout time.Duration
}

// Validate reports every problem with c at once.
func (c KongConfig) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		bad("kong admin url: required")
	case err != nil:
		bad("kong admin url %q: %w", RedactURL(c.URL), err)
	case u.Scheme != "http" && u.Scheme != "https":
		bad("kong admin url %q: want http:// or https://", RedactURL(c.URL))
	case u.Host == "":
		bad("kong admin url %q: no host", RedactURL(c.URL))
	}
	if _, err := ParseHeaders(c.Headers); err != nil {
		errs = append(errs, err)
	}
	if strings.ContainsAny(c.Workspace, "/?#% ") {
		bad("kong workspace %q: want a plain name", c.Workspace)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("kong tls: client certificate and key go together")
	}
	for _, f := range []struct{ what, path string }{{"ca", c.TLSCAFile}, {"cert", c.TLSCertFile}, {"key", c.TLSKeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad("kong tls %s file: %w", f.what, err)
		}
	}
	if c.RequestTimeout < 0 {
		bad("kong request timeout %s: must not be negative", c.RequestTimeout)
	}
	return errors.Join(errs...)
}

// ParseHeaders reads "Name: value" lines into a header set.
func ParseHeaders(lines []string) (http.Header, error) {
	h := http.Header{}
	for _, l := range lines {
		name, value, ok := strings.Cut(l, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t\r\n") {
			// Never echo the line: it likely holds a token.
			return nil, fmt.Errorf("kong admin header: want \"Name: value\", got a line of %d characters", len(l))
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h, nil
}

// RedactURL drops user information from a URL for logs and errors.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	u.User = nil
	return u.String()
}

// NewKongClient builds a go-kong client for c: its own transport with the TLS settings, a
// timeout on every request, the extra headers and the workspace.
func NewKongClient(c KongConfig) (*kong.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("configure kong admin client: %w", err)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	tlsCfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.TLSServerName,
		InsecureSkipVerify: c.TLSInsecureSkipVerify, //nolint:gosec // an explicit operator choice, documented as lab-only
	}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("read kong tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read kong tls ca file %s: no PEM certificate in it", c.TLSCAFile)
		}
		tlsCfg.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load kong tls client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: c.RequestTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   c.RequestTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	headers, _ := ParseHeaders(c.Headers) // validated above
	hc := kong.HTTPClientWithHeaders(&http.Client{Timeout: c.RequestTimeout, Transport: transport}, headers)
	client, err := kong.NewClient(kong.String(c.URL), hc)
	if err != nil {
		return nil, fmt.Errorf("configure kong admin client for %s: %w", RedactURL(c.URL), err)
	}
	client.UserAgent = "blockwire-kongsync"
	client.SetWorkspace(c.Workspace)
	return client, nil
}
