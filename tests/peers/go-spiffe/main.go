// go-spiffe-peer: a Workload API client built on go-spiffe, which the suite runs against
// ward's Workload API (and SPIRE's) the way a Go app would use its identity.
//
//	go-spiffe-peer x509 ADDR              one X.509 context as JSON
//	go-spiffe-peer watch ADDR N           the first N X.509 contexts, one JSON line each
//	go-spiffe-peer bundles ADDR           the X.509 bundles as JSON
//	go-spiffe-peer jwt ADDR AUDIENCE      a JWT-SVID for AUDIENCE as JSON
//	go-spiffe-peer validate ADDR AUD TOK  the JWT-SVID TOK validated for AUD as JSON
//	go-spiffe-peer mtls-get ADDR URL ID   an HTTPS GET to URL with the X.509-SVID as the
//	                                      client certificate, the server authorized as ID
//
// ADDR is a Workload API address (unix:///path). Errors go to stderr with exit code 1,
// prefixed by the step that failed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type svidOut struct {
	SpiffeID string   `json:"spiffe_id"`
	Serial   string   `json:"serial"`
	NotAfter int64    `json:"not_after"`
	Chain    int      `json:"chain"`
	KeyType  string   `json:"key_type"`
	Hint     string   `json:"hint"`
	Verified []string `json:"verified_chain_subjects"`
}

type contextOut struct {
	Svids   []svidOut           `json:"svids"`
	Bundles map[string][]string `json:"bundles"`
}

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", step, err)
	os.Exit(1)
}

func bundles(set *x509bundle.Set) map[string][]string {
	out := map[string][]string{}
	for _, b := range set.Bundles() {
		var subjects []string
		for _, c := range b.X509Authorities() {
			subjects = append(subjects, c.Subject.String())
		}
		sort.Strings(subjects)
		out[b.TrustDomain().IDString()] = subjects
	}
	return out
}

// describe also verifies each SVID against the bundles, as a peer of the app would.
func describe(ctx *workloadapi.X509Context) contextOut {
	out := contextOut{Bundles: bundles(ctx.Bundles)}
	for _, s := range ctx.SVIDs {
		o := svidOut{
			SpiffeID: s.ID.String(),
			Serial:   s.Certificates[0].SerialNumber.Text(16),
			NotAfter: s.Certificates[0].NotAfter.Unix(),
			Chain:    len(s.Certificates),
			KeyType:  fmt.Sprintf("%T", s.PrivateKey),
			Hint:     s.Hint,
		}
		_, chains, err := x509svid.Verify(s.Certificates, ctx.Bundles)
		if err != nil {
			fail("verify", err)
		}
		for _, c := range chains[0] {
			o.Verified = append(o.Verified, c.Subject.String())
		}
		out.Svids = append(out.Svids, o)
	}
	return out
}

func emit(v any) {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		fail("write", err)
	}
}

func main() {
	if len(os.Args) < 3 {
		fail("usage", fmt.Errorf("go-spiffe-peer x509|watch|bundles|jwt|validate|mtls-get ADDR ..."))
	}
	cmd, addr := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		fail("connect", err)
	}
	defer client.Close()

	switch cmd {
	case "x509":
		x, err := client.FetchX509Context(ctx)
		if err != nil {
			fail("fetch x509", err)
		}
		emit(describe(x))
	case "watch":
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fail("usage", err)
		}
		w := &watcher{left: n, done: make(chan struct{})}
		go func() {
			err := client.WatchX509Context(ctx, w)
			if err != nil && ctx.Err() == nil {
				fail("watch x509", err)
			}
		}()
		select {
		case <-w.done:
		case <-ctx.Done():
			fail("watch x509", ctx.Err())
		}
	case "bundles":
		set, err := client.FetchX509Bundles(ctx)
		if err != nil {
			fail("fetch bundles", err)
		}
		emit(bundles(set))
	case "jwt":
		s, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: os.Args[3]})
		if err != nil {
			fail("fetch jwt", err)
		}
		emit(map[string]any{"spiffe_id": s.ID.String(), "audience": s.Audience, "expiry": s.Expiry.Unix(), "token": s.Marshal()})
	case "validate":
		s, err := client.ValidateJWTSVID(ctx, os.Args[4], os.Args[3])
		if err != nil {
			fail("validate jwt", err)
		}
		emit(map[string]any{"spiffe_id": s.ID.String(), "audience": s.Audience, "claims": s.Claims})
	case "mtls-get":
		source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(client))
		if err != nil {
			fail("x509 source", err)
		}
		defer source.Close()
		id, err := spiffeid.FromString(os.Args[4])
		if err != nil {
			fail("usage", err)
		}
		tlsConf := tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(id))
		httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
		resp, err := httpClient.Get(os.Args[3])
		if err != nil {
			fail("get", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			fail("read", err)
		}
		emit(map[string]any{"status": resp.StatusCode, "body": string(body)})
	default:
		fail("usage", fmt.Errorf("unknown command %q", cmd))
	}
}

type watcher struct {
	left int
	done chan struct{}
}

func (w *watcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	if w.left <= 0 {
		return
	}
	emit(describe(x))
	w.left--
	if w.left == 0 {
		close(w.done)
	}
}

func (w *watcher) OnX509ContextWatchError(err error) {
	fmt.Fprintf(os.Stderr, "watch error: %v\n", err)
}

