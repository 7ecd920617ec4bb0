package kbs

import (
	"context"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/peer"
)

// PeerLimiter is a token bucket per peer address: Rate tokens per second up
// to Burst. Idle peers are forgotten, so memory stays bounded by the number
// of active peers.
type PeerLimiter struct {
	rate  float64
	burst float64
	// mu guards peers.
	mu    sync.Mutex
	peers map[string]*bucket
	last  time.Time // last sweep of idle peers
}

type bucket struct {
	tokens float64
	seen   time.Time
}

// NewPeerLimiter allows rate requests per second per peer, with bursts of
// up to burst.
func NewPeerLimiter(rate float64, burst int) *PeerLimiter {
	return &PeerLimiter{rate: rate, burst: float64(burst), peers: map[string]*bucket{}}
}

// Allow reports whether peer may make a request at now, and takes a token
// if so.
func (l *PeerLimiter) Allow(peer string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) > time.Minute {
		for k, b := range l.peers {
			if now.Sub(b.seen) > time.Minute {
				delete(l.peers, k)
			}
		}
		l.last = now
	}
	b, ok := l.peers[peer]
	if !ok {
		b = &bucket{tokens: l.burst, seen: now}
		l.peers[peer] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.seen).Seconds()*l.rate)
	b.seen = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// peerKey is the peer's IP address (not port: one host is one peer).
func peerKey(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}
