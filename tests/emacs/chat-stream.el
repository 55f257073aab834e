;;; chat-stream.el --- A long answer streams while timers keep firing  -*- lexical-binding: t; -*-

;;; Commentary:

;; A 300-token answer, one token every 10 ms, streams into a chat buffer while a 10 ms
;; timer keeps firing (the largest gap between its runs is noted); the buffer grows
;; delta by delta.  Then a second message in the same buffer continues the
;; conversation.

;;; Code:

(assistant-test-run
 (lambda ()
   (let* ((buf (assistant-chat))
          (ticks 0) (max-gap 0) (last (float-time)) (sizes (make-hash-table))
          (timer (run-with-timer
                  0.01 0.01
                  (lambda ()
                    (let ((now (float-time)))
                      (setq max-gap (max max-gap (- now last)) last now ticks (1+ ticks))
                      (puthash (buffer-size buf) t sizes)))))
          (t0 (float-time)))
     (assistant-test-put "major_mode" (symbol-name (buffer-local-value 'major-mode buf)))
     (assistant-test-send buf "[[slow:0.01]] [[words:300]] count please")
     (assistant-test-put "send_returned_ms" (assistant-test-ms t0))
     (assistant-test-put "busy_after_send" (if (assistant-chat-busy-p buf) t :false))
     (setq last (float-time) max-gap 0)
     (assistant-test-wait 30 (assistant-test-idle buf) "the first answer")
     (assistant-test-put "stream_ms" (assistant-test-ms t0))
     (cancel-timer timer)
     (assistant-test-put "ticks" ticks)
     (assistant-test-put "max_gap_ms" (* 1000 max-gap))
     (assistant-test-put "distinct_sizes" (hash-table-count sizes))
     (assistant-test-put "first_lines" (assistant-test-lines buf))
     (assistant-test-put "first_conversation"
                         (buffer-local-value 'assistant-chat-conversation-id buf))
     (assistant-test-send buf "[[reply:second answer]] and again")
     (assistant-test-wait 10 (assistant-test-idle buf) "the second answer")
     (assistant-test-put "second_conversation"
                         (buffer-local-value 'assistant-chat-conversation-id buf))
     (assistant-test-put "lines" (assistant-test-lines buf))
     (assistant-test-put "point_at_end"
                         (with-current-buffer buf (if (eobp) t :false))))))

;;; chat-stream.el ends here
