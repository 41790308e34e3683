package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

const testTopic = "user"

func newCluster(t *testing.T, topics ...string) *kfake.Cluster {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(3, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testConfig(c *kfake.Cluster) config {
	return config{brokers: c.ListenAddrs(), topic: testTopic, addr: "127.0.0.1:0", partitioner: "murmur2"}
}

// startService wires the service against the cluster and returns its URL.
func startService(t *testing.T, cfg config) (string, *syncer) {
	t.Helper()
	prod, err := newProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store := NewStore()
	sy := newSyncer(cfg, store, prod)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sy.Run(ctx) }()
	srv := httptest.NewServer(newHandler(store, prod))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		prod.Close()
	})
	return srv.URL, sy
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if code, _, _ := do(t, http.MethodGet, url+"/readyz", ""); code == http.StatusOK {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("service never became ready")
}

func do(t *testing.T, method, url, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func expect(t *testing.T, method, url, body string, wantCode int, wantBody string) {
	t.Helper()
	code, got, _ := do(t, method, url, body)
	if code != wantCode || (wantBody != "" && got != wantBody) {
		t.Fatalf("%s %s %q: got %d %s, want %d %s", method, url, body, code, got, wantCode, wantBody)
	}
}

func seed(t *testing.T, cfg config, recs ...*kgo.Record) {
	t.Helper()
	cl, err := newProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestService(t *testing.T) {
	c := newCluster(t, testTopic)
	cfg := testConfig(c)
	seed(t, cfg,
		&kgo.Record{Key: []byte("a@x"), Value: []byte(`{"email":"a@x","name":"old"}`)},
		&kgo.Record{Key: []byte("b@x"), Value: []byte(`{"email":"b@x","name":"B"}`)},
		&kgo.Record{Key: []byte("a@x"), Value: []byte(`{"email":"a@x","name":"A"}`)},
		&kgo.Record{Key: []byte("c@x"), Value: []byte(`{"email":"c@x","name":"C"}`)},
		&kgo.Record{Key: []byte("b@x"), Value: nil},
	)
	url, _ := startService(t, cfg)
	waitReady(t, url)

	expect(t, "GET", url+"/healthz", "", 200, "")
	expect(t, "GET", url+"/user?email=a@x", "", 200, `{"email":"a@x","name":"A"}`)
	expect(t, "GET", url+"/user?email=b@x", "", 404, `{"error":"user not found"}`)
	expect(t, "GET", url+"/users", "", 200, `[{"email":"a@x","name":"A"},{"email":"c@x","name":"C"}]`)

	// Writes are visible to the very next read (read-your-writes).
	for i := range 50 {
		name := strings.Repeat("n", i)
		want := `{"email":"d@x","name":"` + name + `"}`
		expect(t, "PUT", url+"/user", `{"email":"d@x","name":"`+name+`"}`, 200, want)
		expect(t, "GET", url+"/user?email=d@x", "", 200, want)
	}
	expect(t, "PUT", url+"/user?email=e@x", `{"name":"<E&>"}`, 200, `{"email":"e@x","name":"<E&>"}`)
	expect(t, "PUT", url+"/user?email=e@x", `{"email":"e@x","name":"E","extra":1}`, 200, `{"email":"e@x","name":"E"}`)
	expect(t, "DELETE", url+"/user?email=d@x", "", 204, "")
	expect(t, "GET", url+"/user?email=d@x", "", 404, "")
	expect(t, "GET", url+"/users", "", 200, `[{"email":"a@x","name":"A"},{"email":"c@x","name":"C"},{"email":"e@x","name":"E"}]`)

	// Validation.
	for _, body := range []string{
		`{`, `[]`, `"x"`, `null`, `{"name":"x"}`, `{"email":"","name":"x"}`, `{"email":1,"name":"x"}`,
		`{"email":null,"name":"x"}`, `{"email":"f@x","name":null}`, `{"email":"f@x","name":2}`,
		`{"email":"f@x","name":"x"} {}`,
	} {
		expect(t, "PUT", url+"/user", body, 400, "")
	}
	expect(t, "PUT", url+"/user?email=g@x", `{"email":"h@x","name":"x"}`, 400, "")
	// A missing name defaults to "", as in the Python service.
	expect(t, "PUT", url+"/user", `{"email":"f@x"}`, 200, `{"email":"f@x","name":""}`)
	expect(t, "PUT", url+"/user?email=f@x", `{}`, 200, `{"email":"f@x","name":""}`)
	expect(t, "DELETE", url+"/user?email=f@x", "", 204, "")
	expect(t, "PUT", url+"/user", `{"email":"f@x","name":"`+strings.Repeat("x", maxBodyBytes)+`"}`, 413, "")
	expect(t, "GET", url+"/user", "", 400, "")
	expect(t, "DELETE", url+"/user", "", 400, "")

	code, _, hdr := do(t, "POST", url+"/user", "{}")
	if code != 405 || hdr.Get("Allow") == "" {
		t.Fatalf("POST /user: %d allow=%q", code, hdr.Get("Allow"))
	}
	expect(t, "GET", url+"/nope", "", 404, `{"error":"not found"}`)

	// The delete must be a real tombstone (null value), not an empty value.
	cons, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers...), kgo.ConsumeTopics(testTopic),
		kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var last *kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for seen := 0; seen < 5+50+2+1+3; {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen++
			if string(r.Key) == "d@x" {
				last = r
			}
		})
	}
	if last == nil || last.Value != nil {
		t.Fatalf("last record for d@x is not a tombstone: %+v", last)
	}

	// A fresh instance rebuilds the same view from the log.
	url2, _ := startService(t, cfg)
	waitReady(t, url2)
	_, all1, _ := do(t, "GET", url+"/users", "")
	_, all2, _ := do(t, "GET", url2+"/users", "")
	if all1 != all2 {
		t.Fatalf("replayed view differs:\n%s\n%s", all1, all2)
	}
	var users []user
	if err := json.Unmarshal([]byte(all2), &users); err != nil || len(users) != 3 {
		t.Fatalf("bad /users: %v %s", err, all2)
	}
}

func TestNotReadyUntilTopicExists(t *testing.T) {
	c := newCluster(t)
	cfg := testConfig(c)
	url, _ := startService(t, cfg)

	expect(t, "GET", url+"/healthz", "", 200, "")
	expect(t, "GET", url+"/readyz", "", 503, "")
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		code, _, hdr := do(t, m, url+"/user?email=a@x", `{"name":"x"}`)
		if code != 503 || hdr.Get("Retry-After") != "1" {
			t.Fatalf("%s before ready: %d Retry-After=%q", m, code, hdr.Get("Retry-After"))
		}
	}

	adm, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := kadm.NewClient(adm).CreateTopic(context.Background(), 2, 1, nil, testTopic); err != nil {
		t.Fatal(err)
	}
	waitReady(t, url)
	expect(t, "PUT", url+"/user", `{"email":"a@x","name":"A"}`, 200, `{"email":"a@x","name":"A"}`)
}

// TestProbeSkipsRecordlessTail checks that a partition whose last offsets hold
// no user records (here: a transaction commit marker) is recognised as caught
// up by the probe.
func TestProbeSkipsRecordlessTail(t *testing.T) {
	c := newCluster(t, testTopic)
	cfg := testConfig(c)
	txn, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers...), kgo.DefaultProduceTopic(testTopic),
		kgo.TransactionalID("probe-test"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	ctx := context.Background()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r := &kgo.Record{Partition: 0, Key: []byte{byte('a' + i)}, Value: []byte(`{}`)}
		if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}

	prod, err := newProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	sy := newSyncer(cfg, NewStore(), prod)
	_, end, err := sy.snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if end[0] != 4 { // three records and the commit marker
		t.Fatalf("end offset %d, want 4", end[0])
	}
	for _, tc := range []struct{ from, want int64 }{{0, 0}, {2, 2}, {3, 4}, {4, 4}} {
		next, err := sy.probe(ctx, 0, tc.from)
		if err != nil {
			t.Fatal(err)
		}
		if next != tc.want {
			t.Errorf("probe from %d = %d, want %d", tc.from, next, tc.want)
		}
	}
}

// TestMurmur2MatchesJava pins the partitioner to the values of Kafka's own
// Utils.murmur2 test vectors (masked to positive, as the Java client does).
func TestMurmur2MatchesJava(t *testing.T) {
	p, err := partitioner("murmur2")
	if err != nil {
		t.Fatal(err)
	}
	tp := p.ForTopic(testTopic)
	for key, javaHash := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		want := int(javaHash & 0x7fffffff)
		if got := tp.Partition(&kgo.Record{Key: []byte(key)}, math.MaxInt32); got != want%math.MaxInt32 {
			t.Errorf("murmur2(%q) partition = %d, want %d", key, got, want)
		}
	}
}

func TestAllJSONEmpty(t *testing.T) {
	if got := NewStore().AllJSON(); !bytes.Equal(got, []byte("[]")) {
		t.Fatalf("got %s", got)
	}
}

// TestConcurrentReadYourWrites has many clients write and immediately read
// back their own keys.
func TestConcurrentReadYourWrites(t *testing.T) {
	c := newCluster(t, testTopic)
	url, _ := startService(t, testConfig(c))
	waitReady(t, url)

	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 30 {
				email := fmt.Sprintf("w%d@x", w)
				want := fmt.Sprintf(`{"email":"%s","name":"%d"}`, email, i)
				req, _ := http.NewRequest(http.MethodPut, url+"/user?email="+email, strings.NewReader(fmt.Sprintf(`{"name":"%d"}`, i)))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				resp, err = http.Get(url + "/user?email=" + email)
				if err != nil {
					t.Error(err)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != want {
					t.Errorf("read %s after writing %s", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
