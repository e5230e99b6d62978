package broker

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// minServerMajor.minServerMinor is the first nats-server with per-message TTL and KV limit
// markers, which expiring blocks depend on.
const minServerMajor, minServerMinor = 2, 11

// Validate refuses a Config that cannot work, naming every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if err := c.Names.Validate(); err != nil {
		errs = append(errs, err)
	}

	var methods []string
	if c.CredsFile != "" {
		methods = append(methods, "creds file")
	}
	if c.NKeySeedFile != "" {
		methods = append(methods, "nkey seed file")
	}
	if c.User != "" || c.Password != "" {
		methods = append(methods, "user/password")
		if c.User == "" || c.Password == "" {
			bad("nats auth: user and password go together")
		}
	}
	if c.Token != "" {
		methods = append(methods, "token")
	}
	for _, u := range splitURLs(c.URL) {
		if pu, err := url.Parse(u); err == nil && pu.User != nil {
			methods = append(methods, "credentials in the URL")
			break
		}
	}
	if len(methods) > 1 {
		bad("nats auth: use one method, not %s", strings.Join(methods, " and "))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("nats tls: client certificate and key go together (cert %q, key %q)", c.TLSCertFile, c.TLSKeyFile)
	}

	if c.URL == "" {
		if c.CredsFile != "" || c.NKeySeedFile != "" {
			bad("embedded nats: creds and nkey seed files need an external server; use user/password or a token")
		}
		if c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" {
			bad("embedded nats: TLS files apply to an external NATS URL only")
		}
		if _, _, err := parseListen(c.Listen); err != nil {
			errs = append(errs, err)
		}
	} else {
		if strings.TrimSpace(strings.ReplaceAll(c.URL, ",", "")) == "" {
			bad("nats url %q: no server in the list", c.URL)
		}
		// Checked here because nats.go reports a missing file only as a failed connection.
		for _, f := range []struct{ what, path string }{
			{"creds file", c.CredsFile}, {"nkey seed file", c.NKeySeedFile},
			{"tls ca file", c.TLSCAFile}, {"tls cert file", c.TLSCertFile}, {"tls key file", c.TLSKeyFile},
		} {
			if f.path == "" {
				continue
			}
			if _, err := os.Stat(f.path); err != nil {
				bad("nats %s: %w", f.what, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid broker config: %w", errors.Join(errs...))
	}
	return nil
}

// splitURLs splits a comma-separated server list.
func splitURLs(s string) []string {
	var out []string
	for u := range strings.SplitSeq(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			if !strings.Contains(u, "://") {
				u = "nats://" + u // as nats.go does, so user info is found
			}
			out = append(out, u)
		}
	}
	return out
}

// redactURLs drops user information (user:password or a token) from a URL list for logging.
func redactURLs(s string) string {
	urls := splitURLs(s)
	for i, u := range urls {
		if pu, err := url.Parse(u); err == nil && pu.User != nil {
			pu.User = nil
			urls[i] = pu.String()
		} else if err != nil {
			urls[i] = "(unparsable url)"
		}
	}
	return strings.Join(urls, ",")
}

// checkServerVersion refuses servers older than 2.11 (version strings like "2.10.22" or
// "2.11.0-RC.1").
func checkServerVersion(v string) error {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("read server version %q: not major.minor.patch", v)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("read server version %q: not major.minor.patch", v)
	}
	if major < minServerMajor || (major == minServerMajor && minor < minServerMinor) {
		return fmt.Errorf("%w: server is %s, blockwire needs %d.%d or newer for per-key TTL and limit markers",
			ErrServerTooOld, v, minServerMajor, minServerMinor)
	}
	return nil
}
