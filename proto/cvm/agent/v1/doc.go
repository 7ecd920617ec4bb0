// Package agentv1 is the generated code of the guest agent protocol
// (agent.proto; ttrpc, as containerd's shims speak it). The prose
// specification is docs/protocol-agent.md.
package agentv1
