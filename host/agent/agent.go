// Package agent owns the command channel between a test or an operator on
// the host machine and a booted intact host: newline-delimited JSON over a
// serial port (the guest's ttyS1, QEMU's -serial unix:SOCKET,server=on).
// The host side sends a Request (a command, its files, a timeout), the
// guest side runs it and answers with a Response (exit status, output,
// the errno of a failed exec, duration). Serve is the guest side; Client
// the host side. Only images whose signed kernel command line names the
// agent start it (the example container host's init, for its walkthrough
// and the end-to-end test); production images leave it out.
package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// MaxLine bounds one request or response line (base64 files included).
const MaxLine = 64 << 20

// File is a file the agent writes before it runs the command.
type File struct {
	Path string `json:"path"`
	Data []byte `json:"data"` // base64 in JSON
	Mode uint32 `json:"mode"` // permission bits; 0 means 0644
}

// Request is one command.
type Request struct {
	ID      int      `json:"id"`
	Argv    []string `json:"argv,omitempty"`
	Env     []string `json:"env,omitempty"` // added to the agent's environment
	Dir     string   `json:"dir,omitempty"`
	Stdin   []byte   `json:"stdin,omitempty"`
	Files   []File   `json:"files,omitempty"`
	Timeout float64  `json:"timeout,omitempty"` // seconds; 0 means 5 minutes
}

// Response is what became of a Request.
type Response struct {
	ID      int     `json:"id"`
	Exit    int     `json:"exit"` // -1 when the command could not start or was killed
	Stdout  string  `json:"stdout"`
	Stderr  string  `json:"stderr"`
	Error   string  `json:"error,omitempty"` // why it could not start, or the timeout
	Errno   string  `json:"errno,omitempty"` // the errno name of a failed start ("EACCES")
	Seconds float64 `json:"seconds"`
}

// Runner runs a request (the guest's init supplies one that cooperates
// with its child reaping).
type Runner func(ctx context.Context, r Request) Response

// Serve reads requests from rw and answers each, one at a time, until ctx
// ends or rw fails. A line that is not a request gets a response with
// ID 0 and the parse error.
func Serve(ctx context.Context, rw io.ReadWriter, run Runner) error {
	sc := bufio.NewScanner(rw)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	enc := json.NewEncoder(rw)
	for sc.Scan() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // line noise on the serial port
		}
		var req Request
		var resp Response
		if err := json.Unmarshal(line, &req); err != nil {
			resp = Response{Exit: -1, Error: "agent: bad request: " + err.Error()}
		} else {
			resp = run(ctx, req)
			resp.ID = req.ID
		}
		if err := enc.Encode(&resp); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Client talks to a guest's agent.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	sc   *bufio.Scanner
	next int
}

// Dial connects to the unix socket QEMU serves the guest's serial port on,
// retrying until ctx ends (QEMU creates it when it starts).
func Dial(ctx context.Context, socket string) (*Client, error) {
	for {
		c, err := net.Dial("unix", socket)
		if err == nil {
			sc := bufio.NewScanner(c)
			sc.Buffer(make([]byte, 64<<10), MaxLine)
			return &Client{conn: c, sc: sc}, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent: %s: %w", socket, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends r and waits for its response (or ctx). Responses to earlier,
// abandoned requests are skipped.
func (c *Client) Do(ctx context.Context, r Request) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	r.ID = c.next
	b, err := json.Marshal(&r)
	if err != nil {
		return Response{}, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return Response{}, fmt.Errorf("agent: send: %w", err)
	}
	for c.sc.Scan() {
		line := c.sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var resp Response
		if err := json.Unmarshal(line, &resp); err != nil {
			continue // console noise that looked like JSON
		}
		if resp.ID == r.ID {
			return resp, nil
		}
	}
	err = c.sc.Err()
	// A failed scanner stays failed (a read deadline, say): start a new
	// one for the next request on the same connection.
	c.sc = bufio.NewScanner(c.conn)
	c.sc.Buffer(make([]byte, 64<<10), MaxLine)
	if err != nil {
		return Response{}, fmt.Errorf("agent: receive: %w", err)
	}
	return Response{}, errors.New("agent: connection closed")
}

// Wait sends no-op requests until the agent answers one (the guest is up)
// or ctx ends.
func (c *Client) Wait(ctx context.Context) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.Do(rctx, Request{})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("agent: the guest did not answer: %w", ctx.Err())
		}
	}
}
