"""instruct"""
