;;; helpers.el --- Shared by the Emacs scenarios of tests/test_emacs.py  -*- lexical-binding: t; -*-

;;; Commentary:

;; tests/test_emacs.py runs `emacs --batch -Q -L clients/emacs -l tests/emacs/helpers.el
;; -l tests/emacs/SCENARIO.el'.  A scenario loads the package as a user would, drives it
;; with its commands and keys, waits with `assistant-test-wait' (which keeps Emacs's
;; event loop running: process output and timers), notes what it saw with
;; `assistant-test-put', and `assistant-test-run' writes that as JSON to
;; $EMACS_TEST_OUT (an "error" key when the scenario failed) and exits.

;;; Code:

(require 'json)
(require 'subr-x)
(require 'assistant)

(defvar assistant-test-result nil "What the scenario saw: an alist written as JSON.")

(defun assistant-test-put (key value)
  "Note VALUE under KEY (a string) in the result."
  (setf (alist-get key assistant-test-result nil nil #'equal) value))

(defun assistant-test-wait (seconds pred what)
  "Run the event loop until PRED is non-nil; fail after SECONDS (waiting for WHAT)."
  (let ((deadline (+ (float-time) seconds)))
    (while (not (funcall pred))
      (when (> (float-time) deadline)
        (error "Timed out after %s s waiting for %s" seconds what))
      (accept-process-output nil 0.01))))

(defun assistant-test-ms (since)
  "Milliseconds from SINCE (a `float-time') to now."
  (* 1000 (- (float-time) since)))

(defun assistant-test-lines (&optional buffer)
  "The lines of BUFFER (default: the current one) as a vector."
  (with-current-buffer (or buffer (current-buffer))
    (vconcat (split-string (buffer-substring-no-properties (point-min) (point-max)) "\n"))))

(defun assistant-test-send (buffer message)
  "Write MESSAGE under chat BUFFER's last \"## You\" and press its send key."
  (with-current-buffer buffer
    (goto-char (point-max))
    (insert message)
    (call-interactively (key-binding (kbd "C-c C-c")))))

(defun assistant-test-idle (buffer)
  "A predicate: chat BUFFER has no request running."
  (lambda () (not (assistant-chat-busy-p buffer))))

(defun assistant-test-messages ()
  "The echo area's messages so far (the *Messages* log), as a vector of lines."
  (with-current-buffer (messages-buffer)
    (vconcat (split-string (buffer-string) "\n" t))))

(defun assistant-test-last-message ()
  "The newest message of the echo area."
  (let ((all (assistant-test-messages)))
    (and (> (length all) 0) (aref all (1- (length all))))))

(defun assistant-test-json (value)
  "VALUE as JSON: alists are objects, vectors arrays, :false false."
  (let ((json-encoding-pretty-print nil)
        (json-false :false))
    (json-encode value)))

(defun assistant-test-run (fn)
  "Run FN, write the result (or the error) to $EMACS_TEST_OUT and exit."
  (condition-case err
      (funcall fn)
    (error (assistant-test-put "error" (format "%s\n%s" (error-message-string err)
                                               (with-current-buffer "*Messages*"
                                                 (buffer-string))))))
  (with-temp-file (getenv "EMACS_TEST_OUT")
    (insert (assistant-test-json (nreverse assistant-test-result))))
  (kill-emacs 0))

(provide 'helpers)
;;; helpers.el ends here
