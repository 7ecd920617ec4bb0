package kbs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sevsnp"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/attestation/tdx"
	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/kbs/audit"
	"github.com/greatjail/cvm/kbs/challenge"
	"github.com/greatjail/cvm/kbs/config"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/store/boltstore"
	"github.com/greatjail/cvm/kbs/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Ready is told the addresses Run listens on, once it accepts connections.
type Ready func(grpcAddr, metricsAddr string)

// Run serves the broker described by cfg until ctx is cancelled, then
// stops gracefully (in-flight RPCs finish, up to 10 seconds). It owns every
// goroutine it starts; all have ended when it returns.
func Run(ctx context.Context, cfg *config.Server, log *slog.Logger, ready Ready) (err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mat, err := cfg.LoadMaterial()
	if err != nil {
		return err
	}
	st, err := boltstore.Open(cfg.Store, boltstore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	var keks []*resources.KEK
	for i, b := range mat.KEKs {
		k, err := resources.LoadKEK(b)
		if err != nil {
			return fmt.Errorf("kbs: kek_files[%d]: %w", i, err)
		}
		keks = append(keks, k)
	}
	res, err := resources.New(st, keks, rand.Reader, time.Now)
	if err != nil {
		return err
	}
	issuer, err := challenge.NewIssuer(mat.ChallengeKey, challenge.Options{Now: time.Now, Rand: rand.Reader, Lifetime: time.Duration(cfg.ChallengeLifetime)})
	if err != nil {
		return err
	}
	signer, err := token.NewSigner(mat.TokenKey, token.Options{Now: time.Now, Rand: rand.Reader, Lifetime: time.Duration(cfg.TokenLifetime), Issuer: "cvm-kbs"})
	if err != nil {
		return err
	}
	jwks, err := signer.JWKS()
	if err != nil {
		return err
	}
	tv, err := token.NewVerifier(jwks, time.Now)
	if err != nil {
		return err
	}
	verifiers, err := Verifiers(cfg, mat, time.Now)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		return err
	}
	srv, err := New(Options{
		Verifiers: verifiers, Store: st, Resources: res, Audit: audit.New(st, time.Now),
		Challenges: issuer, Nonces: challenge.NewUsedNonces(st), Tokens: signer, TokenVerifier: tv,
		Now: time.Now, Logger: log, Metrics: metrics,
		ChallengeLimit: NewPeerLimiter(cfg.Limits.ChallengesPerSecond, cfg.Limits.ChallengeBurst),
	})
	if err != nil {
		return err
	}

	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.Limits.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.Limits.MaxMessageBytes),
		grpc.ChainUnaryInterceptor(timeoutInterceptor(time.Duration(cfg.Limits.RequestTimeout)), recoverInterceptor(log)),
		grpc.ConnectionTimeout(10 * time.Second),
	}
	if !cfg.InsecurePlaintext {
		opts = append(opts, grpc.Creds(credentials.NewTLS(mat.TLS)))
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("kbs: listen %s: %w", cfg.Listen, err)
	}
	var mlis net.Listener
	if cfg.MetricsListen != config.MetricsOff {
		if mlis, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			lis.Close()
			return fmt.Errorf("kbs: metrics listen %s: %w", cfg.MetricsListen, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- g.Serve(lis) }()
	if mlis != nil {
		go func() {
			if err := hsrv.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	// Forget used nonces once they expire.
	purgeDone := make(chan struct{})
	purgeCtx, stopPurge := context.WithCancel(ctx)
	go func() {
		defer close(purgeDone)
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-purgeCtx.Done():
				return
			case now := <-t.C:
				if _, err := srv.opts.Nonces.Purge(purgeCtx, now); err != nil && purgeCtx.Err() == nil {
					log.Warn("purging used nonces", "err", err)
				}
			}
		}
	}()
	maddr := ""
	if mlis != nil {
		maddr = mlis.Addr().String()
	}
	log.Info("cvm-kbs serving", "grpc", lis.Addr().String(), "metrics", maddr, "tls", !cfg.InsecurePlaintext, "tees", teeNames(verifiers))
	if ready != nil {
		ready(lis.Addr().String(), maddr)
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	hs.Shutdown()
	stopPurge()
	<-purgeDone
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		g.Stop()
		<-stopped
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	log.Info("cvm-kbs stopped")
	return err
}

// Verifiers builds the verifier of each TEE the configuration trusts: SEV-SNP
// and TDX always (pinned vendor roots), TPM when attestation keys are
// registered, sim only when a sim root is configured.
func Verifiers(cfg *config.Server, mat *config.Material, now func() time.Time) (map[attestation.TEE]attestation.Verifier, error) {
	out := map[attestation.TEE]attestation.Verifier{}
	var fetcher sevsnp.Fetcher
	if !cfg.SNP.Offline {
		fetcher = &sevsnp.HTTPFetcher{}
	}
	if cfg.SNP.CertCache != "" {
		// At most one KDS request per second from this broker: a flood of
		// reports naming unknown chips fails fast instead of queueing.
		fetcher = &sevsnp.Cache{Dir: cfg.SNP.CertCache, Upstream: fetcher, Now: now, UpstreamInterval: time.Second}
	}
	snp, err := sevsnp.New(sevsnp.Options{Now: now, Fetcher: fetcher, CheckRevocations: cfg.SNP.CheckRevocations})
	if err != nil {
		return nil, err
	}
	out[attestation.TEESEVSNP] = snp
	var coll tdx.CollateralSource
	switch {
	case cfg.TDX.CollateralDir != "":
		coll = tdx.DirCollateral{Dir: cfg.TDX.CollateralDir}
	case !cfg.TDX.Offline:
		coll = &tdx.PCSClient{BaseURL: cfg.TDX.PCSURL}
	}
	td, err := tdx.New(tdx.Options{Now: now, Collateral: coll, CheckRevocations: cfg.TDX.CheckRevocations})
	if err != nil {
		return nil, err
	}
	out[attestation.TEETDX] = td
	if len(mat.TrustedAKs) > 0 {
		tv, err := tpm.New(tpm.Options{Now: now, TrustedAKs: mat.TrustedAKs})
		if err != nil {
			return nil, err
		}
		out[attestation.TEETPM] = tv
	}
	if mat.SimRoot != nil {
		sv, err := sim.NewVerifier(mat.SimRoot, now)
		if err != nil {
			return nil, err
		}
		out[attestation.TEESim] = sv
	}
	return out, nil
}

func teeNames(m map[attestation.TEE]attestation.Verifier) []string {
	var out []string
	for _, t := range []attestation.TEE{attestation.TEESEVSNP, attestation.TEETDX, attestation.TEETPM, attestation.TEESim} {
		if _, ok := m[t]; ok {
			out = append(out, string(t))
		}
	}
	return out
}

func timeoutInterceptor(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return h(ctx, req)
	}
}

// recoverInterceptor turns a panic in a handler into an Internal error
// for that RPC instead of a crashed broker.
func recoverInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in handler", "method", info.FullMethod, "panic", fmt.Sprint(r))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(ctx, req)
	}
}
