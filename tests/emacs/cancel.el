;;; cancel.el --- Cancelling keeps the partial answer  -*- lexical-binding: t; -*-

;;; Commentary:

;; A slow answer is cancelled with the chat buffer's C-c C-k once it has started to
;; stream: the result comes at once, the part already written stays in the buffer,
;; marked cancelled, and the next prompt opens.  Then an answer that never starts
;; (the provider hangs) is cancelled with M-x assistant-cancel.

;;; Code:

(defun assistant-test-cancel (message key)
  "Send MESSAGE in a new chat buffer; once it streams (or after 0.3 s), cancel it.
KEY non-nil cancels with the buffer's C-c C-k, else with `assistant-cancel'."
  (let ((buf (assistant-chat))
        (started (float-time)))
    (assistant-test-send buf message)
    (assistant-test-wait
     10 (lambda () (or (> (buffer-local-value 'assistant-chat--streamed buf) 0)
                       (and (not key) (> (float-time) (+ started 0.3)))))
     "the answer to start")
    (let ((t0 (float-time)))
      (with-current-buffer buf
        (if key
            (progn
              (assistant-test-put "binding"
                                  (symbol-name (key-binding (kbd "C-c C-k"))))
              (call-interactively (key-binding (kbd "C-c C-k"))))
          (call-interactively #'assistant-cancel)))
      (assistant-test-wait 5 (assistant-test-idle buf) "the cancelled result")
      (list (cons "cancel_ms" (assistant-test-ms t0))
            (cons "lines" (assistant-test-lines buf))
            (cons "conversation"
                  (buffer-local-value 'assistant-chat-conversation-id buf))))))

(assistant-test-run
 (lambda ()
   (let ((warm (assistant-chat)))     ; the daemon's first answer loads its provider code
     (assistant-test-send warm "[[reply:warm]] up")
     (assistant-test-wait 15 (assistant-test-idle warm) "the warm-up answer"))
   (assistant-test-put "key" (assistant-test-cancel "[[slow:0.2]] [[words:50]] go slowly" t))
   (assistant-test-put "command" (assistant-test-cancel "[[hang]] wait forever" nil))))

;;; cancel.el ends here
