package kbs_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/greatjail/cvm/kbs"
	"github.com/greatjail/cvm/kbs/config"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// TestRun starts the broker from a configuration made by config.Init, the
// way cvm-kbs serve does, and checks health, reflection, the admin API and
// a clean stop when the context ends.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	a, err := authority()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "sim-root-in.pem")
	if err := os.WriteFile(root, a.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Init(filepath.Join(dir, "kbs"), config.InitOptions{Listen: "127.0.0.1:8443", SimRoot: root, Now: time.Now(), Rand: rand.Reader}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadServer(filepath.Join(dir, "kbs", config.FileServer))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", config.MetricsOff
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- kbs.Run(ctx, cfg, nil, func(g, _ string) { ready <- g }) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not become ready")
	}
	adm, err := config.LoadAdmin(filepath.Join(dir, "kbs", config.FileAdmin))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := adm.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", h, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		services[s.GetName()] = true
	}
	for _, want := range []string{"cvm.kbs.v1.Broker", "cvm.kbs.v1.Admin", "cvm.kbs.v1.Audit", "grpc.health.v1.Health"} {
		if !services[want] {
			t.Errorf("reflection does not list %s (got %v)", want, services)
		}
	}
	rs.CloseSend()
	if _, err := kbsv1.NewAdminClient(conn).ListResources(ctx, &kbsv1.ListResourcesRequest{}); err != nil {
		t.Errorf("ListResources: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}
