package kbscmd

import "google.golang.org/grpc/status"

func statusOf(err error) (string, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return "", false
	}
	return st.Code().String(), true
}
