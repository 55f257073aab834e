;;; assistant-rpc.el --- The assistantd connection of assistant.el  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The assistantd authors
;; SPDX-License-Identifier: MIT

;; This file is part of assistant.el; see assistant.el for the package's headers.

;;; Commentary:

;; One connection to the daemon's Unix socket, shared by every command.  It speaks
;; JSON-RPC with the Language Server Protocol's Content-Length framing through
;; `jsonrpc.el' (the daemon answers in the framing the client used).  Everything is
;; asynchronous: a request returns at once, its callbacks run from the process filter
;; as the daemon's messages arrive, and nothing here waits in a loop.
;;
;; Notifications that belong to a request (chat/delta, summarize/progress) carry
;; `request_id'; `jsonrpc-async-request' does not return the id it picked, so the
;; connection class below notes the id of each request as it is sent.
;;
;; When nothing answers on the socket, the daemon is started in the background
;; (`assistant-daemon-command', detached in its own session so it outlives Emacs) and
;; the requests wait in a queue until it answers.

;;; Code:

(require 'cl-lib)
(require 'eieio)
(require 'jsonrpc)
(require 'subr-x)

(defgroup assistant nil
  "Chat, edit and summarize with the assistantd daemon."
  :group 'tools
  :prefix "assistant-"
  :link '(url-link :tag "README" "https://github.com/OWNER/assistantd/tree/main/clients/emacs"))

(defcustom assistant-socket nil
  "Path of the daemon's Unix socket.
nil follows the daemon's own rule: $ASSISTANTD_SOCKET, else
$XDG_RUNTIME_DIR/assistantd/assistantd.sock (/run/user/UID/... when
XDG_RUNTIME_DIR is unset; ~/Library/Caches/TemporaryItems/... on macOS)."
  :type '(choice (const :tag "The daemon's default" nil) file))

(defcustom assistant-autostart t
  "Whether to start the daemon when nothing answers on the socket."
  :type 'boolean)

(defcustom assistant-daemon-command '("assistantd" "--quiet")
  "The command that starts the daemon, as a list of program and arguments.
It runs detached from Emacs, in /, with $ASSISTANTD_SOCKET set to the socket
path.  Other choices: (\"assistantctl\" \"daemon\" \"start\") or
\(\"python3\" \"-m\" \"assistantd\" \"--quiet\")."
  :type '(repeat string))

(defcustom assistant-start-timeout 15
  "Seconds to wait for an autostarted daemon to answer."
  :type 'number)

(defcustom assistant-log-events nil
  "Non-nil logs every message in the *assistantd events* buffer.
For debugging: pretty-printing each streamed delta is slow."
  :type 'boolean)

(defconst assistant-rpc-unavailable -1
  "Error code (not one of the protocol's) for a daemon that is not reachable.")

(defconst assistant-rpc-cancelled -32800
  "The protocol's code for a cancelled request.")

(defclass assistant-rpc--connection (jsonrpc-process-connection)
  ((last-id :initform nil :accessor assistant-rpc--last-id
            :documentation "The id of the request sent last.")
   (requests :initform (make-hash-table) :accessor assistant-rpc--requests
             :documentation "Requests sent on it and not yet answered, by id."))
  :documentation "A connection to assistantd that keeps its requests by id.")

(cl-defmethod jsonrpc-connection-send :before ((conn assistant-rpc--connection)
                                               &rest args &key id method
                                               &allow-other-keys)
  "Note the ID of a request (a message with a METHOD) sent on CONN."
  (when (and id method)
    (setf (assistant-rpc--last-id conn) id)))

(cl-defstruct (assistant-rpc-request (:constructor assistant-rpc--make-request)
                                     (:copier nil))
  "One request: queued until connected, then sent, then done."
  method params on-done on-notify id conn (state 'queued) internal)

(defvar assistant-rpc--conn nil "The live connection, or nil.")
(defvar assistant-rpc--starting nil
  "While the daemon starts: a plist of :queue, :path, :deadline, :status.")

(defun assistant-rpc-socket-path ()
  "The socket path by the protocol's rule (`assistant-socket' first)."
  (cond ((and assistant-socket (not (string-empty-p assistant-socket)))
         (expand-file-name assistant-socket))
        ((not (string-empty-p (or (getenv "ASSISTANTD_SOCKET") "")))
         (getenv "ASSISTANTD_SOCKET"))
        (t (let ((runtime (getenv "XDG_RUNTIME_DIR")))
             (when (or (null runtime) (string-empty-p runtime))
               (setq runtime (if (eq system-type 'darwin)
                                 (expand-file-name "~/Library/Caches/TemporaryItems")
                               (format "/run/user/%d" (user-uid)))))
             (concat (file-name-as-directory runtime) "assistantd/assistantd.sock")))))

(defmacro assistant-rpc--safely (what &rest body)
  "Run BODY; report an error in it (WHAT names the callback), not raise it."
  (declare (indent 1) (debug (form body)))
  `(condition-case-unless-debug err
       (progn ,@body)
     (error (message "assistant: %s failed: %s" ,what (error-message-string err)))))

(defun assistant-rpc--why (err)
  "What went wrong in the `file-error' ERR of a connect, in a few words."
  (if (stringp (nth 2 err)) (downcase (nth 2 err)) (error-message-string err)))

(defun assistant-rpc--finish (req err result)
  "End REQ once: call its on-done with ERR or RESULT."
  (unless (eq (assistant-rpc-request-state req) 'done)
    (setf (assistant-rpc-request-state req) 'done)
    (when (assistant-rpc-request-conn req)
      (remhash (assistant-rpc-request-id req)
               (assistant-rpc--requests (assistant-rpc-request-conn req))))
    (assistant-rpc--safely (assistant-rpc-request-method req)
      (funcall (assistant-rpc-request-on-done req) err result))))

(defun assistant-rpc--unavailable (format-string &rest args)
  "An error plist: no daemon answered (FORMAT-STRING and ARGS say why)."
  (list :code assistant-rpc-unavailable :message (apply #'format format-string args)))

(defun assistant-rpc--on-notification (conn method params)
  "Route notification METHOD with PARAMS on CONN to its request, by request_id."
  (let* ((rid (plist-get params :request_id))
         (req (and rid (gethash rid (assistant-rpc--requests conn)))))
    (when (and req (assistant-rpc-request-on-notify req))
      (assistant-rpc--safely method
        (funcall (assistant-rpc-request-on-notify req) (symbol-name method) params)))))

(defun assistant-rpc--on-shutdown (conn)
  "The connection CONN is gone: fail what it had in flight and forget it."
  (when (eq conn assistant-rpc--conn)
    (setq assistant-rpc--conn nil))
  (let (lost)
    (maphash (lambda (_id req) (push req lost)) (assistant-rpc--requests conn))
    (dolist (req lost)
      (assistant-rpc--finish req (assistant-rpc--lost) nil))))

(defun assistant-rpc--lost ()
  "The error of a request whose connection broke."
  (assistant-rpc--unavailable "the daemon closed the connection"))

(defun assistant-rpc--open (path)
  "Connect to the daemon on PATH and return the connection.
Signal `file-error' when nothing answers."
  (make-instance
   'assistant-rpc--connection
   :name "assistantd"
   :process (make-network-process :name "assistantd" :family 'local :service path
                                  :coding 'utf-8-emacs-unix :noquery t)
   :events-buffer-scrollback-size (if assistant-log-events nil 0)
   :notification-dispatcher #'assistant-rpc--on-notification
   :on-shutdown #'assistant-rpc--on-shutdown))

(defun assistant-rpc--send (req)
  "Send REQ on the live connection (a failed write ends it with an error)."
  (let ((conn assistant-rpc--conn))
    (condition-case err
        (progn
          (jsonrpc-async-request
           conn (intern (assistant-rpc-request-method req)) (assistant-rpc-request-params req)
           :success-fn (lambda (result) (assistant-rpc--finish req nil result))
           :error-fn (lambda (err)
                       ;; jsonrpc.el's "Server died" (-1) when the connection breaks
                       (assistant-rpc--finish
                        req (if (jsonrpc-running-p conn) err (assistant-rpc--lost)) nil))
           :timeout nil)
          (let ((id (assistant-rpc--last-id conn)))
            (setf (assistant-rpc-request-id req) id
                  (assistant-rpc-request-conn req) conn
                  (assistant-rpc-request-state req) 'sent)
            (puthash id req (assistant-rpc--requests conn))))
      (error
       (assistant-rpc--finish
        req (assistant-rpc--unavailable "cannot send to the daemon (%s)"
                                        (error-message-string err))
        nil)))))

;;;; Starting the daemon

(defconst assistant-rpc--start-script
  (concat "s=$1; shift; \"$@\" </dev/null >/dev/null 2>>\"$s.err\"; c=$?; "
          "[ -e \"$s.err\" ] && echo $c >\"$s\"")
  "Runs the daemon command; its exit code goes to $1 if it ends while we wait.")

(defun assistant-rpc--spawn (path status)
  "Start `assistant-daemon-command' for socket PATH, exit code to file STATUS.
Return nil, or a string that says why it cannot start."
  (let ((program (car assistant-daemon-command)))
    (if (not (and program (executable-find program)))
        (format "cannot start %s: not found in exec-path" program)
      ;; `call-process' with destination 0 starts it in a session of its own and does
      ;; not wait: the daemon outlives Emacs and no terminal signal reaches it.
      (let ((process-environment (cons (concat "ASSISTANTD_SOCKET=" path)
                                       process-environment))
            (default-directory "/"))
        (apply #'call-process "/bin/sh" nil 0 nil "-c" assistant-rpc--start-script
               "sh" status assistant-daemon-command))
      nil)))

(defun assistant-rpc--read-status (status)
  "Return (CODE . STDERR) of a start that ended (file STATUS), else nil."
  (when (file-exists-p status)
    (let ((code (with-temp-buffer
                  (insert-file-contents status)
                  (string-to-number (buffer-string))))
          (err (with-temp-buffer
                 (ignore-errors (insert-file-contents (concat status ".err")))
                 (string-trim (buffer-string)))))
      (cons code err))))

(defun assistant-rpc--fail-queue (st err)
  "Stop starting (ST) and fail its queued requests with ERR."
  (setq assistant-rpc--starting nil)
  (assistant-rpc--cleanup st)
  (dolist (req (plist-get st :queue))
    (assistant-rpc--finish req err nil)))

(defun assistant-rpc--cleanup (st)
  "Delete the status files of start ST (a daemon that lives on writes none)."
  (let ((status (plist-get st :status)))
    (when status
      (ignore-errors (delete-file (concat status ".err")))
      (ignore-errors (delete-file status)))))

(defun assistant-rpc--retry (st)
  "Connect again for the start ST; when it answers, send what waited."
  (when (eq st assistant-rpc--starting)
    (let ((path (plist-get st :path)))
      (condition-case err
          (progn
            (setq assistant-rpc--conn (assistant-rpc--open path)
                  assistant-rpc--starting nil)
            (assistant-rpc--cleanup st)
            (message "assistant: assistantd started")
            (mapc #'assistant-rpc--send (plist-get st :queue)))
        (file-error
         (let ((exit (assistant-rpc--read-status (plist-get st :status)))
               (now (float-time)))
           (when (and exit (/= (car exit) 0) (not (plist-get st :exit)))
             ;; A failed start; give a concurrent one (it fails too) two more seconds.
             (plist-put st :exit exit)
             (plist-put st :deadline (min (plist-get st :deadline) (+ now 2))))
           (if (> now (plist-get st :deadline))
               (let ((ex (plist-get st :exit)))
                 (assistant-rpc--fail-queue
                  st (assistant-rpc--unavailable
                      "the daemon did not answer on %s (%s)%s" path
                      (assistant-rpc--why err)
                      (if ex (format ", it exited with code %d: %s" (car ex)
                                     (truncate-string-to-width (cdr ex) 300))
                        ""))))
             (run-with-timer 0.1 nil #'assistant-rpc--retry st))))))))

(defun assistant-rpc--start (req path why)
  "Start the daemon for PATH (nothing answered: WHY); queue REQ until it answers."
  (let* ((status (make-temp-file "assistantd-start-"))
         (st (list :queue (list req) :path path :status status
                   :deadline (+ (float-time) assistant-start-timeout))))
    (delete-file status)                ; the start script writes it when the command ends
    (setq assistant-rpc--starting st)
    (let ((cannot (assistant-rpc--spawn path status)))
      (if cannot
          (assistant-rpc--fail-queue st (assistant-rpc--unavailable "%s (%s)" cannot why))
        (message "assistant: starting assistantd...")
        (run-with-timer 0.1 nil #'assistant-rpc--retry st)))))

;;;; Requests

(defun assistant-rpc-params (&rest plist)
  "PLIST without the keys whose value is nil (optional params are left out)."
  (let (out)
    (while plist
      (when (cadr plist)
        (setq out (nconc out (list (car plist) (cadr plist)))))
      (setq plist (cddr plist)))
    out))

(cl-defun assistant-rpc-request (method params on-done &key on-notify (autostart t) internal)
  "Send METHOD (a string) with PARAMS (a plist); return the request at once.
ON-DONE is called once with (ERROR RESULT): ERROR is nil or a plist with :code,
:message and :data; RESULT is the result as a plist.  ON-NOTIFY is called with
\(METHOD PARAMS) for each notification of this request.  AUTOSTART nil never
starts the daemon.  INTERNAL requests are never `assistant-rpc-newest'."
  (let ((req (assistant-rpc--make-request
              :method method :params params :on-done on-done :on-notify on-notify
              :internal internal)))
    (cond
     ((and assistant-rpc--conn (jsonrpc-running-p assistant-rpc--conn))
      (assistant-rpc--send req))
     (assistant-rpc--starting
      (plist-put assistant-rpc--starting :queue
                 (append (plist-get assistant-rpc--starting :queue) (list req))))
     (t
      (let ((path (assistant-rpc-socket-path)))
        (condition-case err
            (progn
              (setq assistant-rpc--conn (assistant-rpc--open path))
              (assistant-rpc--send req))
          (file-error
           (let ((why (assistant-rpc--why err)))
             (if (and autostart assistant-autostart)
                 (assistant-rpc--start req path why)
               (assistant-rpc--finish
                req (assistant-rpc--unavailable
                     "the daemon is not running on %s (%s) and autostart is off" path why)
                nil))))))))
    req))

(defun assistant-rpc-cancel (req)
  "Ask the daemon to end REQ; return non-nil when REQ was still running.
chat/send and summarize/* then answer with what they have (finish_reason
\"cancelled\"); a request still waiting for the daemon to start ends at once."
  (pcase (and req (assistant-rpc-request-state req))
    ('queued
     (when assistant-rpc--starting
       (plist-put assistant-rpc--starting :queue
                  (delq req (plist-get assistant-rpc--starting :queue))))
     (assistant-rpc--finish
      req (list :code assistant-rpc-cancelled :message "cancelled before it was sent") nil)
     t)
    ('sent
     (let ((conn (assistant-rpc-request-conn req)))
       (when (jsonrpc-running-p conn)
         (jsonrpc-notify conn (intern "$/cancelRequest")
                         (list :id (assistant-rpc-request-id req)))
         t)))))

(defun assistant-rpc-running-p (req)
  "Non-nil while REQ has not ended."
  (and req (not (eq (assistant-rpc-request-state req) 'done))))

(defun assistant-rpc-newest ()
  "The newest request still running that a user started, or nil."
  (let (best)
    (when assistant-rpc--conn
      (maphash (lambda (id req)
                 (when (and (not (assistant-rpc-request-internal req))
                            (or (null best) (> id (assistant-rpc-request-id best))))
                   (setq best req)))
               (assistant-rpc--requests assistant-rpc--conn)))
    (or best
        (car (last (cl-remove-if #'assistant-rpc-request-internal
                                 (plist-get assistant-rpc--starting :queue)))))))

(defun assistant-rpc-describe (err)
  "Describe the error plist ERR in one line."
  (let ((msg (format "%s" (or (plist-get err :message) "error")))
        (data (plist-get err :data)))
    (when (and data (listp data))
      (dolist (key '(:message :reason :provider :url))
        (let ((v (plist-get data key)))
          (when (and (stringp v) (not (string-match-p (regexp-quote v) msg)))
            (setq msg (format "%s (%s: %s)" msg (substring (symbol-name key) 1) v))))))
    msg))

(provide 'assistant-rpc)
;;; assistant-rpc.el ends here
