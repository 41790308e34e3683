// Command go-user-service is a user CRUD service that uses a Kafka topic as
// its database: every write is a keyed record (email -> user JSON, or a
// tombstone for deletes), and the service serves reads from an in-memory view
// rebuilt by replaying the topic at start-up and kept current by consuming it.
//
// It is a Go/franz-go peer of the Python server, with the same HTTP contract.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type config struct {
	brokers     []string
	topic       string
	addr        string
	partitioner string
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("go-user-service", flag.ContinueOnError)
	bootstrap := os.Getenv("KAFKA_BOOTSTRAP_SERVERS")
	if bootstrap == "" {
		bootstrap = "127.0.0.1:9092"
	}
	var cfg config
	fs.StringVar(&bootstrap, "bootstrap", bootstrap, "comma-separated Kafka bootstrap servers (default from $KAFKA_BOOTSTRAP_SERVERS)")
	fs.StringVar(&cfg.topic, "topic", "user", "topic holding the users")
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8081", "HTTP listen address")
	fs.StringVar(&cfg.partitioner, "partitioner", "murmur2",
		"key partitioner: murmur2 (Java default, librdkafka murmur2_random) or consistent (librdkafka default, crc32)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	for b := range strings.SplitSeq(bootstrap, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.brokers = append(cfg.brokers, b)
		}
	}
	if len(cfg.brokers) == 0 {
		return config{}, errors.New("no bootstrap servers given")
	}
	if cfg.topic == "" {
		return config{}, errors.New("topic must not be empty")
	}
	if _, err := partitioner(cfg.partitioner); err != nil {
		return config{}, err
	}
	return cfg, nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx is canceled, then shuts down in dependency order: HTTP
// first (in-flight writes still need the consumer to finish their
// read-your-writes wait), then the consumer, then the producer.
func run(ctx context.Context, cfg config) error {
	prod, err := newProducer(cfg)
	if err != nil {
		return err
	}
	defer prod.Close()

	store := NewStore()
	syncCtx, cancelSync := context.WithCancel(context.Background())
	defer cancelSync()
	syncDone := make(chan error, 1)
	go func() { syncDone <- newSyncer(cfg, store, prod).Run(syncCtx) }()

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newHandler(store, prod),
		ReadHeaderTimeout: 10 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Printf("listening on http://%s\n", ln.Addr())

	var syncErr error
	syncRunning := true
	select {
	case <-ctx.Done():
		log.Print("shutting down")
	case err = <-serveErr:
	case syncErr = <-syncDone: // only returns early on a fatal error
		syncRunning = false
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), produceTimeout+time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutdownCtx); serr != nil && err == nil {
		err = serr
	}
	cancelSync()
	if syncRunning {
		syncErr = <-syncDone
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, syncErr)
}
