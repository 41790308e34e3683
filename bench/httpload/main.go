// Command httpload drives the user services' HTTP contract for the benchmark:
// PUT latency (read-your-writes included), PUT-to-visible latency on a second
// instance, and GET throughput. It prints one JSON object on stdout.
//
// Every run is bounded both in requests (-n) and in time (-max-time).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type options struct {
	mode      string
	url       string
	readURL   string
	clients   int
	requests  int
	warmup    int
	duration  time.Duration
	maxTime   time.Duration
	keyPrefix string
	keys      int
	userFmt   string
	users     int
	pollEvery time.Duration
}

// Summary is what a run prints.
type Summary struct {
	Mode     string  `json:"mode"`
	Clients  int     `json:"clients"`
	Count    int     `json:"count"`
	Errors   int     `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	Mean     float64 `json:"mean_ms"`
	// For mode visible: the PUT's own latency, beside the latency to visible.
	PutP50 float64 `json:"put_p50_ms,omitempty"`
	PutP99 float64 `json:"put_p99_ms,omitempty"`
	Polls  int     `json:"polls,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "put", "put | visible | get")
	flag.StringVar(&o.url, "url", "", "base URL of the instance written to (and read from, for get)")
	flag.StringVar(&o.readURL, "read-url", "", "visible: base URL of the instance polled for the write")
	flag.IntVar(&o.clients, "c", 1, "concurrent clients, one keep-alive connection each")
	flag.IntVar(&o.requests, "n", 1000, "put/visible: measured writes in total, over all clients")
	flag.IntVar(&o.warmup, "warmup", 50, "put/visible: writes per client before measuring")
	flag.DurationVar(&o.duration, "d", 5*time.Second, "get: how long to run")
	flag.DurationVar(&o.maxTime, "max-time", 120*time.Second, "stop after this long, whatever is left")
	flag.StringVar(&o.keyPrefix, "key-prefix", "bench", "put/visible: key prefix for the written users")
	flag.IntVar(&o.keys, "keys", 100, "put/visible: distinct keys per client (the first write of each creates it)")
	flag.StringVar(&o.userFmt, "user-format", "user%07d@example.com", "get: email of user i")
	flag.IntVar(&o.users, "users", 1000, "get: read users 0..users-1 at random")
	flag.DurationVar(&o.pollEvery, "poll", time.Millisecond, "visible: pause between GETs on the read instance")
	flag.Parse()
	if o.url == "" || o.clients < 1 || (o.mode == "visible" && o.readURL == "") {
		fmt.Fprintln(os.Stderr, "httpload: give -url (and -read-url for -mode visible), -c >= 1")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.maxTime)
	defer cancel()
	var s Summary
	switch o.mode {
	case "put", "visible":
		s = runWrites(ctx, o)
	case "get":
		s = runGets(ctx, o)
	default:
		fmt.Fprintf(os.Stderr, "httpload: unknown mode %q\n", o.mode)
		os.Exit(2)
	}
	_ = json.NewEncoder(os.Stdout).Encode(s)
}

func newClient() *http.Client {
	// One connection per client goroutine, kept alive; loopback only.
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     1,
			DisableCompression:  true,
		},
	}
}

// do sends one request and reads the whole response.
func do(ctx context.Context, c *http.Client, method, url string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

type result struct {
	lat, put []time.Duration
	polls    int
	errors   int
	firstErr string
}

func (r *result) fail(msg string) {
	r.errors++
	if r.firstErr == "" {
		r.firstErr = msg
	}
}

func runWrites(ctx context.Context, o options) Summary {
	perClient := (o.requests + o.clients - 1) / o.clients
	results := make([]result, o.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range o.clients {
		wg.Go(func() {
			r := &results[w]
			c, rc := newClient(), newClient()
			for i := range o.warmup + perClient {
				if ctx.Err() != nil {
					return
				}
				email := fmt.Sprintf("%s-w%d-k%d@example.com", o.keyPrefix, w, i%o.keys)
				name := fmt.Sprintf("%s %d %d", o.keyPrefix, w, i)
				body := fmt.Appendf(nil, `{"email":%q,"name":%q}`, email, name)
				t0 := time.Now()
				code, _, err := do(ctx, c, http.MethodPut, o.url+"/user", body)
				putLat := time.Since(t0)
				if err != nil || (code != 200 && code != 201) {
					r.fail(fmt.Sprintf("PUT %s: %d %v", email, code, err))
					continue
				}
				lat := putLat
				if o.mode == "visible" {
					seen := false
					for ctx.Err() == nil {
						r.polls++
						code, got, err := do(ctx, rc, http.MethodGet, o.readURL+"/user?email="+email, nil)
						if err == nil && code == 200 && nameIs(got, name) {
							seen = true
							break
						}
						if time.Since(t0) > 10*time.Second {
							break
						}
						time.Sleep(o.pollEvery)
					}
					lat = time.Since(t0)
					if !seen {
						r.fail(fmt.Sprintf("%s not visible on the read instance within 10 s", email))
						continue
					}
				}
				if i >= o.warmup {
					r.lat = append(r.lat, lat)
					r.put = append(r.put, putLat)
				}
			}
		})
	}
	wg.Wait()
	return summarize(o, results, time.Since(start))
}

func runGets(ctx context.Context, o options) Summary {
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	results := make([]result, o.clients)
	var wg sync.WaitGroup
	var running atomic.Int32
	start := time.Now()
	for w := range o.clients {
		wg.Go(func() {
			running.Add(1)
			defer running.Add(-1)
			r := &results[w]
			c := newClient()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				email := fmt.Sprintf(o.userFmt, rng.IntN(o.users))
				t0 := time.Now()
				code, body, err := do(ctx, c, http.MethodGet, o.url+"/user?email="+email, nil)
				if ctx.Err() != nil {
					return // cut off by the deadline: not counted
				}
				if err != nil || code != 200 || !strings.Contains(string(body), email) {
					r.fail(fmt.Sprintf("GET %s: %d %v", email, code, err))
					continue
				}
				r.lat = append(r.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	return summarize(o, results, time.Since(start))
}

func summarize(o options, results []result, elapsed time.Duration) Summary {
	var lat, put []time.Duration
	s := Summary{Mode: o.mode, Clients: o.clients, Seconds: elapsed.Seconds()}
	for _, r := range results {
		lat = append(lat, r.lat...)
		put = append(put, r.put...)
		s.Errors += r.errors
		s.Polls += r.polls
		if s.FirstErr == "" {
			s.FirstErr = r.firstErr
		}
	}
	s.Count = len(lat)
	if s.Count == 0 {
		return s
	}
	s.RPS = float64(s.Count) / elapsed.Seconds()
	slices.Sort(lat)
	var total time.Duration
	for _, d := range lat {
		total += d
	}
	s.Mean = ms(total / time.Duration(len(lat)))
	s.P50, s.P90, s.P99, s.Max = ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99)), ms(lat[len(lat)-1])
	if o.mode == "visible" {
		slices.Sort(put)
		s.PutP50, s.PutP99 = ms(pct(put, 50)), ms(pct(put, 99))
	}
	return s
}

// nameIs reports whether body is a JSON user whose name is name (servers differ in spacing).
func nameIs(body []byte, name string) bool {
	var u struct {
		Name string `json:"name"`
	}
	return json.Unmarshal(body, &u) == nil && u.Name == name
}

// pct is the nearest-rank percentile of sorted durations.
func pct(sorted []time.Duration, p float64) time.Duration {
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
