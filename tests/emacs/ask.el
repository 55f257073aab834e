;;; ask.el --- Asking about the region  -*- lexical-binding: t; -*-

;;; Commentary:

;; M-x assistant-ask-region on two lines of an Emacs Lisp buffer: the question and the
;; region (in a fenced block) show as the user's turn in a chat buffer in another
;; window, the region goes along as context, the answer streams in, and a follow-up
;; continues the conversation.  The source text does not change.

;;; Code:

(assistant-test-run
 (lambda ()
   (switch-to-buffer (get-buffer-create "calc.el"))
   (emacs-lisp-mode)
   (insert "(setq x 1)\n(+ x 1)\n;; end\n")
   (set-mark (point-min))
   (goto-char (point-min))
   (forward-line 2)
   (activate-mark)
   (let* ((buf (assistant-ask-region (region-beginning) (region-end)
                                     "[[reply:It returns two.]] what does this return?")))
     (assistant-test-put "windows" (length (window-list)))
     (assistant-test-put "split_shows_chat" (if (get-buffer-window buf) t :false))
     (assistant-test-wait 10 (assistant-test-idle buf) "the answer")
     (assistant-test-put "source" (with-current-buffer "calc.el" (buffer-string)))
     (assistant-test-put "conversation"
                         (buffer-local-value 'assistant-chat-conversation-id buf))
     (assistant-test-send buf "[[reply:Yes.]] sure?")
     (assistant-test-wait 10 (assistant-test-idle buf) "the follow-up")
     (assistant-test-put "followup_conversation"
                         (buffer-local-value 'assistant-chat-conversation-id buf))
     (assistant-test-put "lines" (assistant-test-lines buf)))))

;;; ask.el ends here
