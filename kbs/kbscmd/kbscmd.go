// Package kbscmd implements the key broker's command-line operations as
// library functions: `cvm-kbs init` and `serve`, the operator's `cvm kbs`
// admin commands, and the guest-side `cvm kbs fetch`. The cobra commands in
// cmd/ only parse flags into the option structs here.
package kbscmd

import (
	"errors"
	"fmt"
	"os"

	"github.com/greatjail/cvm/kbs/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// ErrUsage marks errors in how a command was invoked.
var ErrUsage = errors.New("usage")

// maxFile bounds files the commands read (resources are at most 1 MiB).
const maxFile = 4 << 20

func readFile(flag, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: %s is required", ErrUsage, flag)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUsage, flag, err)
	}
	if fi.Size() > maxFile {
		return nil, fmt.Errorf("%w: %s: %s is %d bytes, more than %d", ErrUsage, flag, path, fi.Size(), maxFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUsage, flag, err)
	}
	return b, nil
}

// DialAdmin connects to the broker named in an admin.yaml with the client
// certificate it names.
func DialAdmin(path string) (*grpc.ClientConn, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: --admin-config is required (the admin.yaml written by 'cvm-kbs init')", ErrUsage)
	}
	cfg, err := config.LoadAdmin(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --admin-config: %w", ErrUsage, err)
	}
	tc, err := cfg.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("%w: --admin-config: %w", ErrUsage, err)
	}
	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.Address, err)
	}
	return conn, nil
}

// rpcError turns a broker status into a message for the operator.
func rpcError(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%s: broker unreachable: %s", what, st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s: not allowed: %s", what, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s: %s", ErrUsage, what, st.Message())
	}
	return fmt.Errorf("%s: %s", what, st.Message())
}
