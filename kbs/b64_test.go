package kbs_test

import "encoding/base64"

func base64URLDecode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
func base64URLEncode(b []byte) string          { return base64.RawURLEncoding.EncodeToString(b) }
