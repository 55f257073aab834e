;;; replace.el --- Replacing the region: one undo step; failures change nothing  -*- lexical-binding: t; -*-

;;; Commentary:

;; `assistant-replace-region' on a word while the user types elsewhere before the
;; answer comes: the word is replaced, and one `undo' brings it back and keeps what the
;; user typed.  Then a whole-line region.  Then a request the provider refuses and one
;; that is cancelled (`assistant-cancel' outside any chat buffer): the text and the
;; buffer's modification tick stay as they were.

;;; Code:

(defun assistant-test-replace-idle (req)
  "A predicate: REQ has ended."
  (lambda () (not (assistant-rpc-running-p req))))

(defun assistant-test-command-loop-boundary ()
  "What the command loop does between two commands: close the undo step."
  (undo-boundary))

(assistant-test-run
 (lambda ()
   (switch-to-buffer (get-buffer-create "source.txt"))
   (buffer-enable-undo)
   (insert "alpha\nbeta gamma\ndelta\n")
   (assistant-test-command-loop-boundary)
   (let ((original (buffer-string))
         (beg (progn (goto-char (point-min)) (search-forward "beta") (match-beginning 0)))
         (end (match-end 0)))
     ;; The region and the command as a user gives them.
     (set-mark beg)
     (goto-char end)
     (activate-mark)
     (let ((req (assistant-replace-region (region-beginning) (region-end)
                                          "[[slow:0.2]] [[reply:REPLACED]] shout it")))
       ;; The user types at the top while the answer is being written, and is still
       ;; typing when it lands (keystrokes in a row have no undo boundary between).
       (goto-char (point-min))
       (insert "typed ")
       (assistant-test-put "before" (buffer-string))
       (assistant-test-wait 10 (assistant-test-replace-idle req) "the replacement")
       (assistant-test-put "after" (buffer-string))
       (setq last-command nil)
       (undo)
       (assistant-test-put "undone" (buffer-string))
       (assistant-test-put "original" original)))
   ;; Whole lines: the region ends with a newline, so does the result.
   (erase-buffer)
   (insert "one\ntwo\nthree\n")
   (assistant-test-command-loop-boundary)
   (let ((req (assistant-replace-region (point-min) (progn (goto-char (point-min))
                                                            (forward-line 2) (point))
                                        "[[reply:```\nONE TWO\n```]] join")))
     (assistant-test-wait 10 (assistant-test-replace-idle req) "the line replacement")
     (assistant-test-put "lines_after" (buffer-string))
     (setq last-command nil)
     (undo)
     (assistant-test-put "lines_undone" (buffer-string)))
   ;; A refused request and a cancelled one change nothing.
   (erase-buffer)
   (insert "keep me\n")
   (assistant-test-command-loop-boundary)
   (let* ((tick (buffer-modified-tick))
          (failed (assistant-replace-region (point-min) (point-max) "[[error:400]] no"))
          (cancelled nil))
     (assistant-test-wait 10 (assistant-test-replace-idle failed) "the refused replacement")
     (assistant-test-put "failed_echo" (assistant-test-last-message))
     (setq cancelled (assistant-replace-region (point-min) (point-max) "[[hang]] never"))
     (assistant-test-wait 5 (lambda () (eq (assistant-rpc-request-state cancelled) 'sent))
                          "the request to be sent")
     (with-temp-buffer (assistant-cancel))  ; not a chat buffer: the newest request
     (assistant-test-wait 5 (assistant-test-replace-idle cancelled) "the cancelled replacement")
     (assistant-test-put "cancelled_echo" (assistant-test-last-message))
     (assistant-test-put "kept" (buffer-string))
     (assistant-test-put "changed" (if (= tick (buffer-modified-tick)) :false t)))))

;;; replace.el ends here
